"""Which files a batch reads and where each result goes. Pure path logic, no I/O beyond listing."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .registry import ARCHITECTURES, get_architecture
from .settings import FORMATS, READ_ONLY, READABLE

SUFFIX = "_deblurred"
COMPARE_SUFFIX = "_compare"
SCALE_NAMES: dict[float, str] = {float(k): tag for k, tag in get_architecture("mimo-unet").sides}
SIDE_TAGS = frozenset(tag for a in ARCHITECTURES for _, tag in a.sides)  # every network's side outputs


@dataclass(frozen=True)
class Job:
    """One input file and its outputs; ``error`` is set for an input that cannot even be tried."""

    input: Path
    output: Path
    scales: dict[float | str, Path]  # the network's other outputs (--save-scales), by DeblurResult.scales key
    error: str | None = None
    compare: Path | None = None  # input and output side by side (--compare)
    hint: str | None = None  # what to do about ``error``


def output_suffix(src: Path) -> str:
    """The input's own extension, or .png for a type that is read but not written (GIF, HEIC...)."""
    return ".png" if src.suffix.lower() in READ_ONLY else src.suffix


def _is_ours(path: Path) -> bool:
    # A folder processed twice must not deblur its own earlier results again.
    stem = path.stem
    return (
        stem.endswith(SUFFIX) or stem.endswith(COMPARE_SUFFIX) or any(stem.endswith(f"{SUFFIX}_{n}") for n in SIDE_TAGS)
    )


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in READABLE and not _is_ours(p))


Found = tuple[Path, Path | None, str | None, str | None]  # file, its folder argument, error, its fix


def expand_inputs(args: list[str], recursive: bool = False) -> list[Found]:
    """Each argument -> (file, the folder it was found in or None, error or None, what to do
    about it), in order, without duplicates. Folders give their images; globs are expanded; a
    missing path is kept with an error so that it is reported and the others still run."""
    seen: set[Path] = set()
    out: list[Found] = []

    def add(p: Path, root: Path | None, error: str | None = None, hint: str | None = None) -> None:
        try:
            key = p.resolve()
        except (
            RuntimeError,
            OSError,
        ):  # a symlink loop (RuntimeError before Python 3.13): "no such file" would mislead
            key = p.absolute()
            error, hint = "a symbolic link that points back to itself", "fix or remove the link"
        if key not in seen:
            seen.add(key)
            out.append((p, root, error, hint))

    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            found = _images_in(p, recursive)
            if not found:
                fix = f"add images of a type mimo reads ({', '.join(sorted(READABLE))})"
                add(p, None, "folder holds no images", fix if recursive else "use --recursive for subfolders")
            for f in found:
                add(f, p, None)
        elif p.exists():
            add(p, None)
        elif glob.has_magic(arg):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(arg), recursive=True))
            files = [m for m in matches if m.is_file() and not _is_ours(m)]
            if not files:
                add(p, None, "no file matches this pattern", "check the pattern and the folder it names")
            for m in files:
                add(m, None)
        else:
            add(p, None, "no such file", "check the path and its spelling")
    return out


def plan_jobs(
    args: list[str],
    output: str | None = None,
    recursive: bool = False,
    sides: tuple[tuple[float | str, str], ...] = tuple(SCALE_NAMES.items()),
) -> list[Job]:
    """The jobs for a `mimo deblur` run. ``output``: None (beside each input), a folder, or a file
    for a single input (recognised by an image extension). ``sides``: the network's other outputs
    and their file tags (registry.Architecture.sides; MIMO-UNet's scales by default). Raises
    ValueError when ``output`` is a file name but several inputs were given."""
    found = expand_inputs(args, recursive)
    out_path = Path(output).expanduser() if output else None
    # A name with an extension is a file for one input (an unknown one is refused later, when
    # writing); for several inputs only an image extension is taken as a mistaken file name.
    looks_like_file = out_path is not None and not out_path.is_dir() and bool(out_path.suffix)
    single_file = looks_like_file and len(found) == 1
    if looks_like_file and len(found) > 1 and Path(str(output)).suffix.lower() in FORMATS:
        raise ValueError(f"-o {output} is a file name, but {len(found)} inputs were given; pass a folder")
    jobs = []
    for src, root, error, hint in found:
        if single_file:
            assert out_path is not None
            dest = out_path
        else:
            folder = src.parent
            if out_path is not None:
                folder = out_path / src.parent.relative_to(root) if root is not None else out_path
            dest = folder / f"{src.stem}{SUFFIX}{output_suffix(src)}"
        scales = side_paths(dest, sides)
        stem = dest.stem.removesuffix(SUFFIX) if not single_file else dest.stem
        compare = dest.with_name(f"{stem}{COMPARE_SUFFIX}{dest.suffix}")
        jobs.append(Job(src, dest, scales, error, compare, hint))
    return jobs


def side_paths(output: Path, sides: tuple[tuple[float | str, str], ...]) -> dict[float | str, Path]:
    """Where the network's other outputs of ``output`` go: NAME_TAG.png beside it, by output key."""
    return {key: output.with_name(f"{output.stem}_{tag}.png") for key, tag in sides}


def targets(job: Job, scales: bool = False, compare: bool = False) -> list[Path]:
    """Every file ``job`` writes: the output, with ``scales`` the coarse ones, with ``compare`` the comparison."""
    return [
        job.output,
        *(job.scales.values() if scales else ()),
        *([job.compare] if compare and job.compare is not None else []),
    ]


def collision(jobs: list[Job], scales: bool = False, compare: bool = False) -> tuple[Path, Job, Job] | None:
    """The first file two jobs would both write, with those two jobs (None when every job
    writes its own files), so that a batch is refused before one result overwrites another."""
    owner: dict[Path, Job] = {}
    for job in jobs:
        if job.error:
            continue
        for t in targets(job, scales, compare):
            key = Path(os.path.normcase(os.path.abspath(t)))
            first = owner.setdefault(key, job)
            if first is not job:
                return t, first, job
    return None
