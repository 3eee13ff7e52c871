"""One photo job: read, deblur, write (the output, the coarse scales, the comparison), with every
refusal checked first. The command line, the Python API, the web page and a cluster worker all run
this one job. Never prints: problems are raised, remarks go through ``warnings``."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path

from .atomic import remove_stale_parts, write_failed
from .engine import Deblurrer
from .errors import ImageError, MimoError, OutputError
from .images import format_for, read_image, side_by_side, write_like
from .paths import Job, targets
from .settings import DEFAULT_MAX_PIXELS, FORMATS, READ_ONLY, READABLE, ProgressFn


@dataclass(frozen=True)
class PhotoOptions:
    """What to write and what to refuse. ``quality``: JPEG/WebP quality; ``max_pixels``: larger
    images are refused (decompression bombs), 0 for no limit."""

    overwrite: bool = False
    skip_existing: bool = False
    save_scales: bool = False
    compare: bool = False
    quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.overwrite and self.skip_existing:
            raise ValueError("overwrite and skip_existing exclude each other")


@dataclass(frozen=True)
class PhotoResult:
    """What one job did: "ok" (with the size, tiles and time) or "skipped" (the output exists)."""

    job: Job
    status: str
    width: int = 0
    height: int = 0
    tiles: int = 0
    tile_size: int = 0
    seconds: float = 0.0
    fp32_fallbacks: int = 0
    precision: str = ""  # the precision it ran in (what --precision auto chose, once per run)
    backend: str = ""  # what ran the network: torch or openvino (what --backend auto chose)


def check_job(job: Job, options: PhotoOptions, sources: Set[Path] = frozenset()) -> str:
    """'run' or 'skip' (the output exists and ``skip_existing``), without reading the image.
    ``sources``: the resolved inputs of the whole batch, none of which may be written over.
    Raises ImageError or OutputError for a job that must not run."""
    if job.error:
        raise ImageError(f"{job.input}: {job.error}", job.hint)
    if job.output.suffix.lower() not in FORMATS and job.output.suffix.lower() == job.input.suffix.lower():
        kind = job.input.suffix or "a file without an extension"
        raise ImageError(
            f"{job.input}: {kind} is not an image type mimo reads", f"use one of {', '.join(sorted(READABLE))}"
        )
    format_for(job.output)  # an output of a type we cannot write fails this file, not the batch
    for t in targets(job, True, options.compare):
        if t.resolve() in sources or t.resolve() == job.input.resolve():
            raise OutputError(f"{t}: is an input; refusing to write over it", "choose another -o")
    if job.output.exists():
        if options.skip_existing:
            return "skip"
        if not options.overwrite:
            raise OutputError(f"{job.output}: already exists", "pass --overwrite to replace it or --skip-existing")
    if options.compare and job.compare is not None and job.compare.exists() and not options.overwrite:
        raise OutputError(f"{job.compare}: already exists", "pass --overwrite to replace it")
    folder = next((p for p in (job.output.parent, *job.output.parent.parents) if p.exists()), None)
    if folder is not None and folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        # Found now, before the photo is read and deblurred, not when its result is written.
        raise OutputError(f"{job.output}: the folder {folder} is not writable", "choose another -o folder")
    return "run"


def deblur_image(
    job: Job,
    deblurrer: Deblurrer | Callable[[], Deblurrer],
    options: PhotoOptions = PhotoOptions(),  # noqa: B008  (frozen)
    sources: Set[Path] = frozenset(),
    on_progress: ProgressFn | None = None,
    label: str | Callable[[], str] = "",
) -> PhotoResult:
    """Run one job. ``deblurrer``: a Deblurrer, or a function that gives one (called once the
    image has been read, so that a batch of bad files never loads a model). ``label`` names the
    model in the comparison image (or is a function that gives the name once the model is
    loaded). Every output is written atomically, and what a killed earlier run left half-written
    is removed.

    Raises ImageError (unreadable input), OutputError (refused or unwritable output) or
    MimoError (the network failed on this image: out of memory, NaN/Inf output), each naming the
    file; one failed job leaves the others free to run.
    """
    if check_job(job, options, sources) == "skip":
        return PhotoResult(job, "skipped")
    image = read_image(job.input, options.max_pixels)
    if job.input.suffix.lower() in READ_ONLY and job.output.suffix == ".png":
        bits = "16-bit " if image.pixels.dtype.itemsize == 2 else ""
        warnings.warn(
            f"{job.input}: {job.input.suffix} cannot be written; writing {bits}PNG {job.output.name}",
            UserWarning,
            stacklevel=2,
        )
    model = deblurrer if isinstance(deblurrer, Deblurrer) else deblurrer()
    t0 = time.perf_counter()
    try:
        result = model(image.pixels, on_progress)
    except (ImageError, OutputError):
        raise
    except MimoError as e:
        raise MimoError(f"{job.input}: {e.message}", e.hint) from None
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        # Without --overwrite, a file that another run wrote meanwhile is never replaced.
        keep = not options.overwrite
        write_like(job.output, result.image, image, options.quality, replace=not keep)
        if options.save_scales:
            for s, path in job.scales.items():
                write_like(path, result.scales[s], image, replace=not keep)
        if options.compare and job.compare is not None:
            name = label() if callable(label) else label
            both = side_by_side(
                image.pixels, result.image, ("blurry input", f"deblurred ({name})" if name else "deblurred")
            )
            write_like(job.compare, both, image, options.quality, replace=not keep)
    except (FileExistsError, NotADirectoryError):  # from making the folder
        raise OutputError(
            f"{job.output}: cannot make the folder {job.output.parent}: a file is in the way",
            "move that file, or choose another -o folder",
        ) from None
    except OSError as e:
        raise write_failed(job.output, e) from None
    for t in targets(job, options.save_scales, options.compare):
        remove_stale_parts(t)  # left by a run that was killed while writing it
    h, w = result.image.shape[:2]
    seconds = time.perf_counter() - t0
    report = model.report()
    return PhotoResult(
        job, "ok", w, h, result.tiles, result.tile_size, seconds, result.fp32_fallbacks, str(report["precision"]),
        str(report["backend"]),
    )
