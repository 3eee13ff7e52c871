"""`mimo deblur INPUT... [-o OUT]`: deblur photos, one bad file never stopping the rest."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, TimeElapsedColumn

from mimocli.atomic import remove_stale_parts
from mimocli.errors import ImageError, MimoError, OutputError
from mimocli.paths import Job, collision, plan_jobs, targets
from mimocli.registry import DEFAULT_VARIANT, get_variant
from mimocli.settings import DEFAULT_MAX_PIXELS, FORMATS, READ_ONLY, READABLE

if TYPE_CHECKING:  # the heavy modules (torch, OpenCV) are imported when a command runs, not for --help
    from mimocli.engine import Deblurrer
    from mimocli.weights import LoadedWeights

from . import app, err, fail_on_error, options, out, progress_bar, report, warnings_to_stderr
from .weights import byte_progress


def parse_tile(value: str) -> int | str:
    v = value.strip().lower()
    if v == "auto":
        return "auto"
    if v.isdigit():
        return int(v)
    raise typer.BadParameter(f"{value!r}: use auto, 0 (no tiling) or a size in pixels such as 512")


def make_deblurrer(
    variant: str | None,
    weights: str | None,
    cache_dir: Path | None,
    device: str,
    precision: str,
    tile: int | str,
    tile_overlap: int,
    ensemble: bool,
    quiet: bool,
    channels_last: bool | None = None,
    compile: bool | str = False,
    threads: int = 0,
    reuse_memory: bool = True,
    verbose: bool = False,
) -> tuple[Deblurrer, LoadedWeights]:
    """Load the weights (with a download bar) and set up the Deblurrer; errors exit 1. Without
    --variant and --weights, the default variant or, where it cannot be had, the bundled model
    with a warning."""
    import torch

    from mimocli.engine import Deblurrer, reuse_freed_memory
    from mimocli.weights import load_weights

    if threads:
        torch.set_num_threads(threads)
    with fail_on_error(), warnings_to_stderr(quiet):
        dl, update = byte_progress(quiet)
        with dl:
            loaded = load_weights(variant, "cpu", weights, cache_dir, update)
        model, v = loaded.model, loaded.variant
        if variant and (model.num_res, model.base_channel) != (v.num_res, v.base_channel):
            warnings.warn(
                f"--weights hold a MIMO-UNet with {model.num_res} blocks of {model.base_channel} channels, "
                f"not {v.name}; the weights decide",
                UserWarning,
                stacklevel=1,
            )
        d = Deblurrer(model, device, precision, tile, tile_overlap, ensemble or v.ensemble, channels_last, compile)
    if d.device.type == "cpu" and reuse_memory:
        reuse_freed_memory()
    if verbose:
        tile_text = "auto (fits free memory)" if d.tile is None else f"{d.tile} px" if d.tile else "none (whole images)"
        name = "" if loaded.name == str(loaded.path) else f"{loaded.name}, "
        shape = f"{loaded.model.num_res} blocks of {loaded.model.base_channel} channels"
        say(f"weights: {name}{loaded.path}, sha256 {loaded.sha256}, MIMO-UNet with {shape}")
        say(
            f"device: {d.device}, precision: {d.settings['precision']}, channels-last: "
            f"{'on' if d.channels_last else 'off'}, compile: {d.compile}, threads: {torch.get_num_threads()}, "
            f"tile: {tile_text}, overlap {d.tile_overlap} px{', ensemble of 8' if d.ensemble else ''}"
        )
    return d, loaded


def say(text: str) -> None:
    """A verbose line on stderr, verbatim."""
    err.print(text, markup=False, highlight=False)


@app.command()
def deblur(
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    output: str | None = typer.Option(
        None, "-o", "--output", help="Output folder, or a file name for a single input. Default: beside each input."
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into subfolders of folder inputs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (never an input)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output already exists."),
    variant: str | None = options.VARIANT,
    weights: str | None = options.WEIGHTS,
    cache_dir: Path | None = options.CACHE_DIR,
    device: str = options.DEVICE,
    precision: str = options.PRECISION,
    channels_last: bool | None = options.CHANNELS_LAST,
    compile: bool | None = options.compile_option("off"),
    threads: int = options.THREADS,
    reuse_memory: bool = options.REUSE_MEMORY,
    tile: str = options.TILE,
    tile_overlap: int = options.TILE_OVERLAP,
    ensemble: bool = options.ENSEMBLE,
    save_scales: bool = typer.Option(
        False, "--save-scales", help="Also write the 1/2 and 1/4 scale outputs (NAME_deblurred_x0.5.png, _x0.25.png)."
    ),
    compare: bool = typer.Option(
        False, "--compare", help="Also write NAME_compare.EXT: the input and the output side by side, labelled."
    ),
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality (100 on WebP: lossless)."),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help="Refuse larger images (decompression bombs); 0: no limit."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON record per output on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars, summary or warnings."),
    verbose: bool = options.VERBOSE,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be read, written and skipped (and what would fail), then exit."
    ),
) -> None:
    """Deblur photos: NAME.EXT -> NAME_deblurred.EXT beside it, or into -o."""
    from mimocli.images import read_image, side_by_side, write_like

    tile_value = parse_tile(tile)
    if overwrite and skip_existing:
        raise typer.BadParameter("--overwrite and --skip-existing exclude each other", param_hint="--overwrite")
    try:
        jobs = plan_jobs(inputs, output, recursive)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="-o") from None
    with fail_on_error():
        get_variant(variant or DEFAULT_VARIANT)  # an unknown variant is an error before any work
        clash = collision(jobs, save_scales, compare)
        if clash:
            path, a, b = clash
            raise OutputError(
                f"{path}: both {a.input} and {b.input} would be written there; nothing was done",
                "deblur them in separate runs, each with its own -o folder",
            )
    sources = {j.input.resolve() for j in jobs}
    if dry_run:
        _dry_run(jobs, sources, overwrite, skip_existing, save_scales, compare, as_json)
        return

    started = time.perf_counter()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    deblurrer: Deblurrer | None = None
    used: dict[str, str] = {}
    with warnings_to_stderr(quiet):
        progress = progress_bar(MofNCompleteColumn(), TimeElapsedColumn(), quiet=quiet)
        with progress:
            files_task = progress.add_task("files", total=len(jobs))
            tiles_task = progress.add_task("tiles", total=None, visible=False)
            for job in jobs:
                progress.update(files_task, description=f"[bold]{escape(job.input.name)}")
                try:
                    status = _check(job, sources, overwrite, skip_existing, compare)
                    if status == "skip":
                        counts["skipped"] += 1
                        _emit(as_json, job, "skipped", None)
                        continue
                    image = read_image(job.input, max_pixels)
                    if job.input.suffix.lower() in READ_ONLY and job.output.suffix == ".png":
                        bits = "16-bit " if image.pixels.dtype.itemsize == 2 else ""
                        warnings.warn(
                            f"{job.input}: {job.input.suffix} cannot be written; writing {bits}PNG {job.output.name}",
                            UserWarning,
                            stacklevel=1,
                        )
                    if deblurrer is None:
                        deblurrer, loaded = make_deblurrer(
                            variant,
                            weights,
                            cache_dir,
                            device,
                            precision,
                            tile_value,
                            tile_overlap,
                            ensemble,
                            quiet,
                            channels_last,
                            bool(compile),
                            threads,
                            reuse_memory,
                            verbose,
                        )
                        used = loaded.to_dict()

                    def on_tiles(done: int, total: int) -> None:
                        progress.update(tiles_task, completed=done, total=total, visible=total > 1)

                    t0 = time.perf_counter()
                    result = deblurrer(image.pixels, on_tiles)
                    job.output.parent.mkdir(parents=True, exist_ok=True)
                    write_like(job.output, result.image, image, quality)
                    if save_scales:
                        for s, path in job.scales.items():
                            write_like(path, result.scales[s], image)
                    if compare and job.compare is not None:
                        name = used.get("variant", "")
                        both = side_by_side(image.pixels, result.image, ("blurry input", f"deblurred ({name})"))
                        write_like(job.compare, both, image, quality)
                    for t in targets(job, save_scales, compare):
                        remove_stale_parts(t)  # left by a run that was killed while writing it
                    if verbose:
                        h, w = result.image.shape[:2]
                        tiles = f"{result.tiles} tiles of {result.tile_size} px" if result.tiles > 1 else "whole"
                        say(f"{job.input}: {w}x{h}, {tiles}, {time.perf_counter() - t0:.2f} s")
                    counts["ok"] += 1
                    h, w = result.image.shape[:2]
                    _emit(
                        as_json,
                        job,
                        "ok",
                        {
                            "width": w,
                            "height": h,
                            "tiles": result.tiles,
                            "seconds": round(time.perf_counter() - t0, 3),
                            "fp32_fallbacks": result.fp32_fallbacks,
                            "weights": used,
                        },
                        save_scales,
                        compare,
                    )
                except (ImageError, OutputError) as e:
                    counts["failed"] += 1
                    report(e)
                    _emit(as_json, job, "failed", {"error": str(e)})
                except MimoError as e:  # the network failed on this file (out of memory, NaN output)
                    counts["failed"] += 1
                    report(MimoError(f"{job.input}: {e.message}", e.hint))
                    _emit(as_json, job, "failed", {"error": f"{job.input}: {e}"})
                except OSError as e:
                    counts["failed"] += 1
                    if isinstance(e, (FileExistsError, NotADirectoryError)):  # from making the folder
                        report(f"{job.output}: cannot make the folder {job.output.parent}: a file is in the way")
                    else:
                        report(f"{job.output}: cannot write ({e.strerror or e})")
                    _emit(as_json, job, "failed", {"error": str(e)})
                finally:
                    progress.update(files_task, advance=1)
                    progress.update(tiles_task, visible=False)
    if not quiet:
        seconds = time.perf_counter() - started
        extra = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "ok" and n)
        err.print(
            f"Deblurred {counts['ok']} of {len(jobs)} file(s) in {seconds:.1f} s" + (f" ({extra})" if extra else "")
        )
    if counts["failed"]:
        raise typer.Exit(1)


def _dry_run(
    jobs: list[Job],
    sources: set[Path],
    overwrite: bool,
    skip_existing: bool,
    scales: bool,
    compare: bool,
    as_json: bool,
) -> None:
    """One line per input: what it would be written to, or why it would be skipped or fail. No
    model is loaded and no image decoded; exit 1 when something would fail."""
    failed = 0
    for job in jobs:
        written = [str(t) for t in targets(job, scales, compare)]
        try:
            status = "skip" if _check(job, sources, overwrite, skip_existing, compare) == "skip" else "write"
            reason = "exists" if status == "skip" else ""
        except (ImageError, OutputError) as e:
            status, reason = "fail", str(e)
            failed += 1
        if as_json:
            record = {"input": str(job.input), "output": str(job.output), "status": f"would-{status}"}
            out.print(json.dumps({**record, "writes": written if status == "write" else [], "reason": reason}))
        elif status == "write":
            out.print(f"{job.input} -> {', '.join(written)}")
        elif status == "skip":
            out.print(f"{job.input} skipped: {job.output} exists")
        else:
            report(reason)
    if failed:
        raise typer.Exit(1)


def _check(job: Job, sources: set[Path], overwrite: bool, skip_existing: bool, compare: bool = False) -> str:
    """'run' or 'skip'. Raises ImageError/OutputError for a job that must not run."""
    if job.error:
        raise ImageError(f"{job.input}: {job.error}")
    from mimocli.images import format_for

    if job.output.suffix.lower() not in FORMATS and job.output.suffix.lower() == job.input.suffix.lower():
        kind = job.input.suffix or "a file without an extension"
        raise ImageError(
            f"{job.input}: {kind} is not an image type mimo reads", f"use one of {', '.join(sorted(READABLE))}"
        )
    format_for(job.output)  # an output of a type we cannot write fails this file, not the batch
    extra = [job.compare] if compare and job.compare is not None else []
    for t in targets(job, True, compare):
        if t.resolve() in sources:
            raise OutputError(f"{t}: is an input; refusing to write over it", "choose another -o")
    if job.output.exists():
        if skip_existing:
            return "skip"
        if not overwrite:
            raise OutputError(f"{job.output}: already exists", "pass --overwrite to replace it or --skip-existing")
    for t in extra:
        if t.exists() and not overwrite:
            raise OutputError(f"{t}: already exists", "pass --overwrite to replace it")
    return "run"


def _emit(
    as_json: bool, job: Job, status: str, info: dict[str, object] | None, scales: bool = False, compare: bool = False
) -> None:
    if status == "ok" and not as_json:
        out.print(str(job.output))
        return
    if not as_json:
        return
    record: dict[str, object] = {"input": str(job.input), "output": str(job.output), "status": status}
    if scales:
        record["scales"] = {str(s): str(p) for s, p in job.scales.items()}
    if compare and job.compare is not None:
        record["compare"] = str(job.compare)
    record.update(info or {})
    out.print(json.dumps(record), markup=False, highlight=False)
