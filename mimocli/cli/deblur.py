"""`mimo deblur INPUT... [-o OUT]`: deblur photos, one bad file never stopping the rest."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from mimocli.errors import ImageError, MimoError, OutputError, WeightsError
from mimocli.paths import Job, collision, plan_jobs, side_paths, targets
from mimocli.registry import DEFAULT_VARIANT, Variant, get_variant
from mimocli.settings import DEFAULT_MAX_PIXELS, ClusterSettings, ProgressFn, RunSettings

if TYPE_CHECKING:  # the heavy modules (torch, OpenCV) are imported when a command runs, not for --help
    from mimocli.cluster import Cluster
    from mimocli.engine import Deblurrer
    from mimocli.photos import PhotoOptions, PhotoResult
    from mimocli.weights import LoadedWeights

from . import options
from .console import RateColumn, app, err, fail_on_error, out, progress_bar, report, result, warnings_to_stderr
from .weights import byte_progress


def make_deblurrer(
    variant: str | None,
    weights: str | None,
    cache_dir: Path | None,
    run: RunSettings,
    quiet: bool,
    verbose: bool = False,
) -> tuple[Deblurrer, LoadedWeights]:
    """Load the weights (with a download bar) and set up the Deblurrer; errors exit 1. Without
    --variant and --weights, the default variant or, where it cannot be had, the bundled model
    with a warning. The process-wide choices (threads, reused memory) are made here, by the
    command, not by the library."""
    import torch

    from mimocli.device import apply_process_settings, resolve_device
    from mimocli.engine import build_deblurrer

    loaded = load_model(variant, weights, cache_dir, quiet)
    with fail_on_error(), warnings_to_stderr(quiet):
        apply_process_settings(run, resolve_device(run.device))  # threads first: auto's measurement runs with them
        d = build_deblurrer(loaded.model, run, cache_dir)
    if verbose:
        tile_text = "auto (fits free memory)" if d.tile is None else f"{d.tile} px" if d.tile else "none (whole images)"
        name = "" if loaded.name == str(loaded.path) else f"{loaded.name}, "
        say(f"weights: {name}{loaded.path}, sha256 {loaded.sha256}, {held(loaded.model).shape()}")
        # channels-last and compile are torch's switches: OpenVINO keeps its own layout and compiles by itself
        switches = f"channels-last: {'on' if d.channels_last else 'off'}, compile: {d.compile}, "
        say(
            f"device: {d.device}, precision: {d.settings['precision']} ({d.precision_reason}), "
            f"backend: {d.backend}, {switches if d.backend == 'torch' else ''}threads: {torch.get_num_threads()}, "
            f"tile: {tile_text}, overlap {d.tile_overlap} px{', ensemble of 8' if d.ensemble else ''}"
        )
    return d, loaded


def load_model(variant: str | None, weights: str | None, cache_dir: Path | None, quiet: bool) -> LoadedWeights:
    """The weights, on the CPU (with a download bar); errors exit 1."""
    from mimocli.weights import load_weights

    with fail_on_error(), warnings_to_stderr(quiet):
        dl, update = byte_progress(quiet)
        with dl:
            loaded = load_weights(variant, "cpu", weights, cache_dir, update)
        got, v = held(loaded.model), loaded.variant
        if variant and (got.architecture, got.num_res, got.base_channel) != (v.architecture, v.num_res, v.base_channel):
            warnings.warn(
                f"--weights hold a {got.shape()}, not {v.name}; the weights decide", UserWarning, stacklevel=1
            )
    return loaded


def held(model: object) -> Variant:
    """The network and shape a loaded model has (registry.detect_variant of its weights)."""
    from mimocli.registry import detect_variant

    return detect_variant(model.state_dict())  # type: ignore[attr-defined]


def make_cluster(
    settings: ClusterSettings,
    variant: str | None,
    weights: str | None,
    cache_dir: Path | None,
    run: RunSettings,
    quiet: bool,
) -> Cluster:
    """The weights loaded here and shipped to replicas on the Ray cluster; errors exit 1."""
    try:
        from mimocli.cluster import Cluster
    except ImportError:
        report(MimoError("--ray needs Ray, which is not installed", 'pip install "mimocli[ray]"'))
        raise typer.Exit(1) from None
    loaded = load_model(variant, weights, cache_dir, quiet)
    with fail_on_error(), warnings_to_stderr(quiet):
        return Cluster(settings, loaded, run, cache_dir)


def side_outputs(
    variant: str | None, weights: str | None, cache_dir: Path | None, dry_run: bool = False
) -> tuple[tuple[float | str, str], ...]:
    """What --save-scales writes besides the image, by the network the weights hold: MIMO-UNet's
    1/2 and 1/4 scales, XYDeblur's two residuals (registry.Architecture.sides), so that every
    output name is known when the batch is planned. Read from the keys of the weights (a
    safetensors file's header only); a dry run fetches nothing and loads no pickle: where the
    keys cannot be had that way, it names the outputs of the variant's network."""
    from mimocli.checkpoints import read_shapes
    from mimocli.registry import detect_variant

    v = get_variant(variant or DEFAULT_VARIANT)
    if weights is None:
        return v.arch.sides
    if dry_run:
        path = Path(weights).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            return v.arch.sides
        try:
            return detect_variant(read_shapes(path)).arch.sides
        except WeightsError:
            return v.arch.sides
    from mimocli.weights import resolve_weights

    return detect_variant(read_shapes(resolve_weights(v, weights, cache_dir))).arch.sides


def say(text: str) -> None:
    """A verbose line on stderr, verbatim."""
    err.print(text, markup=False, highlight=False)


@app.command()
@options.run_options(omit=("batch",))
@options.cluster_options
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
    run: RunSettings = RunSettings(),  # noqa: B008  (the run options take its place)
    cluster: ClusterSettings | None = None,  # --ray and its options take its place
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
    if overwrite and skip_existing:
        raise typer.BadParameter("--overwrite and --skip-existing exclude each other", param_hint="--overwrite")
    try:
        jobs = plan_jobs(inputs, output, recursive)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="-o") from None
    if jobs and all(j.error for j in jobs):  # nothing can even be tried: say so before torch loads
        for j in jobs:
            report(ImageError(f"{j.input}: {j.error}", j.hint))
        raise typer.Exit(1)
    from mimocli.photos import PhotoOptions  # torch, OpenCV: only once there is something to do

    photo = PhotoOptions(overwrite, skip_existing, save_scales, compare, quality, max_pixels)
    with fail_on_error():
        get_variant(variant or DEFAULT_VARIANT)  # an unknown variant is an error before any work
        if save_scales:  # the other outputs are named by the network the weights hold
            sides = side_outputs(variant, weights, cache_dir, dry_run)
            jobs = [dataclasses.replace(j, scales=side_paths(j.output, sides)) for j in jobs]
    with fail_on_error():
        clash = collision(jobs, save_scales, compare)
        if clash:
            path, a, b = clash
            raise OutputError(
                f"{path}: both {a.input} and {b.input} would be written there; nothing was done",
                "deblur them in separate runs, each with its own -o folder",
            )
    sources = {j.input.resolve() for j in jobs if not j.error}  # (a job with an error may not resolve: a loop)
    if dry_run:
        _dry_run(jobs, sources, photo, as_json)
        return

    started = time.perf_counter()
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    loaded: list[LoadedWeights] = []
    ran: list[Cluster] = []

    def model() -> Deblurrer:  # loaded with the first image that reads, not before
        d, weights_used = make_deblurrer(variant, weights, cache_dir, run, quiet, verbose)
        loaded.append(weights_used)
        return d

    try:
        with warnings_to_stderr(quiet):
            progress = progress_bar(
                MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(), quiet=quiet
            )
            with progress:
                files_task = progress.add_task("files", total=len(jobs), unit="photo")
                tiles_task = progress.add_task("tiles", total=None, visible=False, unit="tile")

                def on_tiles(done: int, total: int | None) -> None:
                    progress.update(tiles_task, completed=done, total=total, visible=(total or 0) > 1)

                def starting(job: Job) -> None:
                    progress.update(files_task, description=f"[bold]{escape(job.input.name)}")

                if cluster is None:
                    outcomes = _local(jobs, functools.cache(model), photo, sources, on_tiles, starting, loaded)
                else:
                    outcomes = _on_cluster(
                        jobs,
                        photo,
                        sources,
                        lambda: make_cluster(cluster, variant, weights, cache_dir, run, quiet),
                        ran,
                        loaded,
                    )
                for job, outcome in outcomes:
                    progress.update(files_task, advance=1)
                    progress.update(tiles_task, visible=False)
                    if isinstance(outcome, MimoError):
                        counts["failed"] += 1
                        report(outcome)
                        _emit(as_json, job, "failed", {"error": str(outcome)})
                        continue
                    if outcome.status == "skipped":
                        counts["skipped"] += 1
                        _emit(as_json, job, "skipped", None)
                        continue
                    counts["ok"] += 1
                    if verbose:
                        tiles = f"{outcome.tiles} tiles of {outcome.tile_size} px" if outcome.tiles > 1 else "whole"
                        say(f"{job.input}: {outcome.width}x{outcome.height}, {tiles}, {outcome.seconds:.2f} s")
                    info = {
                        "width": outcome.width,
                        "height": outcome.height,
                        "tiles": outcome.tiles,
                        "tile": outcome.tile_size,
                        "precision": outcome.precision,
                        "backend": outcome.backend,
                        "seconds": round(outcome.seconds, 3),
                        "fp32_fallbacks": outcome.fp32_fallbacks,
                        "weights": loaded[0].to_dict(),
                    }
                    _emit(as_json, job, "ok", info, save_scales, compare)
    except KeyboardInterrupt:
        done = counts["ok"] + counts["skipped"]
        err.print(
            Text.assemble(
                ("Interrupted", "bold red"),
                f": {done} of {len(jobs)} file(s) done; no output was left half-written. "
                "Run the same command with --skip-existing to do the rest.",
            )
        )
        raise typer.Exit(130) from None
    if ran and ran[0].retries:
        counts["retried after a worker died"] = ran[0].retries
    if not quiet:
        seconds = time.perf_counter() - started
        extra = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "ok" and n)
        where = f" on {len(ran[0].actors)} Ray replica(s)" if ran else ""
        err.print(
            f"Deblurred {counts['ok']} of {len(jobs)} file(s){where} in {seconds:.1f} s"
            + (f" ({extra})" if extra else "")
        )
    if counts["failed"]:
        raise typer.Exit(1)


Outcome = tuple[Job, "PhotoResult | MimoError"]


def _local(
    jobs: list[Job],
    model: Callable[[], Deblurrer],
    photo: PhotoOptions,
    sources: set[Path],
    on_tiles: ProgressFn,
    starting: Callable[[Job], None],
    loaded: list[LoadedWeights],
) -> Iterator[Outcome]:
    """The jobs one after the other, here."""
    from mimocli.photos import deblur_image

    for job in jobs:
        starting(job)
        try:
            yield job, deblur_image(job, model, photo, sources, on_tiles, lambda: loaded[0].label)
        except MimoError as e:
            yield job, e


def _on_cluster(
    jobs: list[Job],
    photo: PhotoOptions,
    sources: set[Path],
    connect: Callable[[], Cluster],
    ran: list[Cluster],
    loaded: list[LoadedWeights],
) -> Iterator[Outcome]:
    """The jobs on the replicas of a Ray cluster, in the order they finish; what is refused or
    skipped is decided here first, as a local run decides it."""
    from mimocli.photos import PhotoResult, check_job

    todo = []
    for job in jobs:
        try:
            if check_job(job, photo, sources) == "skip":
                yield job, PhotoResult(job, "skipped")
                continue
        except MimoError as e:
            yield job, e
            continue
        todo.append(job)
    if not todo:
        return
    cluster = connect()
    ran.append(cluster)
    loaded.append(cluster.loaded)
    try:
        yield from cluster.photos(todo, photo, cluster.loaded.label)
    finally:
        cluster.close()


def _dry_run(jobs: list[Job], sources: set[Path], photo: PhotoOptions, as_json: bool) -> None:
    """One line per input: what it would be written to, or why it would be skipped or fail. No
    model is loaded and no image decoded; exit 1 when something would fail."""
    from mimocli.photos import check_job

    failed = 0
    for job in jobs:
        written = [str(t) for t in targets(job, photo.save_scales, photo.compare)]
        try:
            status = "skip" if check_job(job, photo, sources) == "skip" else "write"
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


def _emit(
    as_json: bool, job: Job, status: str, info: dict[str, object] | None, scales: bool = False, compare: bool = False
) -> None:
    if status == "ok" and not as_json:
        result(str(job.output))
        if compare and job.compare is not None:
            result(str(job.compare))
        return
    if not as_json:
        return
    record: dict[str, object] = {"input": str(job.input), "output": str(job.output), "status": status}
    if scales:
        record["scales"] = {str(s): str(p) for s, p in job.scales.items()}
    if compare and job.compare is not None:
        record["compare"] = str(job.compare)
    record.update(info or {})
    result(json.dumps(record))
