"""`mimo video IN OUT`: deblur a video frame by frame, keeping its sound, subtitles and timing."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import MofNCompleteColumn, ProgressColumn, Task, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from mimocli.errors import MimoError
from mimocli.settings import DEFAULT_CHECKPOINT, ClusterSettings, RunSettings

from . import options
from .console import app, err, out, progress_bar, report, warnings_to_stderr
from .deblur import make_cluster, make_deblurrer, say

_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")


def parse_time(value: str | None) -> float | None:
    """Seconds from 12.5, 1:02.5 or 1:02:03."""
    if value is None:
        return None
    m = _TIME.match(value.strip())
    if not m:
        raise typer.BadParameter(f"{value!r}: use seconds (12.5), MM:SS or HH:MM:SS")
    parts = [p for p in m.groups() if p is not None]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds


def parse_fps(value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        fps = Fraction(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use a number such as 24, 29.97 or 30000/1001") from None
    if fps <= 0:
        raise typer.BadParameter(f"{value!r}: the frame rate must be positive")
    return fps.limit_denominator(1001 * 1000)


class FpsColumn(ProgressColumn):
    """Frames per second of this run (frames a resumed run reused do not count)."""

    def __init__(self, first: list[int]) -> None:
        super().__init__()
        self.first = first

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        done = task.completed - (self.first[0] if self.first else 0)
        if elapsed <= 0 or done <= 0:
            return Text("-- fps", style="progress.data.speed")
        return Text(f"{done / elapsed:.2f} fps", style="progress.data.speed")


@app.command()
@options.run_options(compile_default="auto", compile_help="auto: when the video is long enough to repay it")
@options.cluster_options
def video(
    input: Path = typer.Argument(..., help="Video file, or a folder of frames.", show_default=False),
    output: Path = typer.Argument(
        ..., help="Output video (.mp4 .mkv .mov .webm), or with --frames a folder.", show_default=False
    ),
    variant: str | None = options.VARIANT,
    weights: str | None = options.WEIGHTS,
    cache_dir: Path | None = options.CACHE_DIR,
    run: RunSettings = RunSettings(),  # noqa: B008  (the run options take its place)
    cluster: ClusterSettings | None = None,  # --ray and its options take its place
    codec: str | None = typer.Option(
        None, "--codec", "-c", help="h264, hevc, vp9, av1, ffv1, prores... Default: h264 (.webm: vp9)."
    ),
    crf: int | None = typer.Option(
        None, "--crf", min=0, max=63, help="Constant quality; lower is better. Default: h264 18, hevc 20, vp9 24."
    ),
    preset: str | None = typer.Option(None, "--preset", help="Encoder speed: x264/x265 names (slow...), vp9 0..8."),
    pix_fmt: str | None = typer.Option(
        None, "--pix-fmt", help="Pixel format, e.g. yuv420p, yuv444p, yuv420p10le. Default: the input's."
    ),
    start: str | None = typer.Option(None, "--start", help="Start of the segment to process: seconds or HH:MM:SS."),
    end: str | None = typer.Option(None, "--end", help="End of the segment (exclusive): seconds or HH:MM:SS."),
    save_scales: bool = typer.Option(
        False, "--save-scales", help="Also write the 1/2 and 1/4 scale outputs (OUT_x0.5.mp4, OUT_x0.25.mp4)."
    ),
    frames: bool = typer.Option(False, "--frames", help="Write OUTPUT as a folder of PNG frames."),
    fps: str | None = typer.Option(
        None,
        "--fps",
        help="Frame rate of a folder of frames (default 25), or of a raw .h264/.h265 stream (default: its own).",
    ),
    checkpoint: int = typer.Option(
        DEFAULT_CHECKPOINT, "--checkpoint", min=1, help="Frames per checkpoint: the most an interruption loses."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output or interrupted run."),
    repair: bool = typer.Option(
        False, "--repair", help="Replace undecodable frames with the previous frame instead of stopping."
    ),
    encoder_threads: int | None = typer.Option(
        None,
        "--encoder-threads",
        min=0,
        help="Encoder threads; 0: FFmpeg's choice. Default: 1 with CPU inference (bit-exact --resume), else 0.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, summary or warnings."),
    verbose: bool = options.VERBOSE,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be read and written (codec, pixel format, outputs), then exit."
    ),
) -> None:
    """Deblur a video frame by frame; sound, subtitles, timing and colours stay as they were."""
    from mimocli.video import VideoOptions, WorkDir, deblur_video, preflight, recorded_choices  # PyAV, torch

    video_options = VideoOptions(
        codec=codec,
        crf=crf,
        preset=preset,
        pix_fmt=pix_fmt,
        start=parse_time(start),
        end=parse_time(end),
        save_scales=save_scales,
        png_frames=frames,
        fps=parse_fps(fps),
        checkpoint=checkpoint,
        resume=resume,
        overwrite=overwrite,
        repair=repair,
        encoder_threads=encoder_threads,
    )
    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite exclude each other", param_hint="--resume")
    if dry_run:
        from mimocli.video import plan_video

        try:
            with warnings_to_stderr(quiet):
                plan = plan_video(input, output, video_options)
        except MimoError as e:
            report(e)
            raise typer.Exit(1) from None
        if as_json:
            out.print(json.dumps(plan), markup=False, highlight=False)
            return
        count = f"{plan['frames']} frames" if plan["frames"] else "frames"
        what = f"{plan['codec']} {plan['out_pix_fmt']}" if "codec" in plan else plan["writes"]
        out.print(
            f"{input}: {plan['size']} {plan['pix_fmt']}, {count} at {plan['fps']:.3f} fps -> {output}: {what}",
            markup=False,
        )
        for extra in plan.get("outputs", [])[1:]:
            out.print(f"  and {extra}", markup=False)
        if plan.get("streams_copied"):
            out.print(f"  {plan['streams_copied']} other stream(s) copied", markup=False)
        if plan.get("resumes_from"):
            out.print(f"  resumes after {plan['resumes_from']} finished frame(s)", markup=False)
        return
    # What can be refused is refused now, before the weights are fetched and loaded.
    try:
        preflight(input, output, video_options)
    except MimoError as e:
        report(e)
        raise typer.Exit(1) from None
    # A resumed run takes the precision and backend its interrupted run chose, instead of measuring again.
    recorded = recorded_choices(output, video_options)
    if run.precision == "auto" and "precision" in recorded:
        run = run.replace(precision=recorded["precision"])
    if run.backend == "auto" and "backend" in recorded:
        run = run.replace(backend=recorded["backend"])
    deblurrer, remote = None, None
    if cluster is None:
        deblurrer, loaded = make_deblurrer(variant, weights, cache_dir, run, quiet, verbose)
    else:
        remote = make_cluster(cluster, variant, weights, cache_dir, run, quiet)
        loaded = remote.loaded
    with warnings_to_stderr(quiet):
        first: list[int] = []
        progress = progress_bar(
            MofNCompleteColumn(), FpsColumn(first), TimeElapsedColumn(), TimeRemainingColumn(), quiet=quiet
        )
        task = progress.add_task(f"[bold]{escape(input.name)}", total=None, unit="frame")

        def on_progress(done: int, total: int | None) -> None:
            if not first:
                first.append(done)
                progress.reset(task, completed=done, total=total)
            progress.update(task, completed=done, total=total)

        try:
            with progress:
                summary = deblur_video(input, output, deblurrer, video_options, on_progress, remote)
        except MimoError as e:
            report(e)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            work = WorkDir(output)
            kept = f"; the finished part is kept in {work.path}: run again with --resume" if work.exists() else ""
            err.print(Text.assemble(("Interrupted", "bold red"), f": {output} was not written{kept}"))
            raise typer.Exit(130) from None
        finally:
            if remote is not None:
                remote.close()
    if verbose:
        tile = f"{summary.tile} px tiles" if summary.tile else "whole frames"
        say(f"{summary.codec} {summary.pix_fmt}, {summary.width}x{summary.height}, {tile}")
    if as_json:
        out.print(json.dumps({**summary.to_dict(), "weights": loaded.to_dict()}), markup=False, highlight=False)
    else:
        out.print(str(output))
    if not quiet:
        extra = []
        if summary.resumed:
            extra.append(f"{summary.resumed} resumed")
        if summary.repaired:
            extra.append(f"{summary.repaired} repaired")
        if summary.missing:
            extra.append(f"{summary.missing} missing from the cut-short input")
        if summary.damaged:
            extra.append(f"{summary.damaged} decoded from damaged data")
        if summary.retries:
            extra.append(f"{summary.retries} segment(s) retried after a worker died")
        if summary.streams_copied:
            extra.append(f"{summary.streams_copied} other stream(s) copied")
        err.print(
            f"Deblurred {summary.deblurred} of {summary.frames} frame(s) in {summary.seconds:.1f} s "
            f"({summary.fps:.2f} fps)" + (f"; {', '.join(extra)}" if extra else "")
        )
