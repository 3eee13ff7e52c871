"""`mimo synth`: blurry/sharp training pairs from a high-frame-rate video or from sharp photos."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import MofNCompleteColumn, TimeElapsedColumn, TimeRemainingColumn

from mimocli.errors import ImageError, MimoError

from .console import app, err, out, progress_bar, report, warnings_to_stderr


@app.command()
def synth(
    inputs: list[Path] = typer.Argument(
        ...,
        help="A video or a folder of its frames; with --shake, sharp photos or folders of them.",
        show_default=False,
    ),
    output: Path = typer.Argument(..., help="Folder for the pairs: OUT/blur/*.png and OUT/sharp/*.png."),
    frames: int = typer.Option(7, "--frames", "-m", min=1, help="Video: frames averaged into one blurry image (odd)."),
    stride: int | None = typer.Option(None, "--stride", min=1, help="Video: frames between windows; default --frames."),
    linear: bool = typer.Option(False, "--linear", help="Blur in linear light through the inverse camera response."),
    gamma: float = typer.Option(2.2, "--gamma", min=1.0, max=4.0, help="With --linear: response x^(1/gamma)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Video: at most this many pairs."),
    shake: bool = typer.Option(False, "--shake", help="Blur still photos with random camera-shake kernels."),
    kernel: int = typer.Option(31, "--kernel", min=3, max=255, help="Shake: the longest blur in pixels."),
    roll: float = typer.Option(
        1.0, "--roll", min=0.0, max=10.0, help="Shake: degrees the camera may turn about its axis (0: uniform blur)."
    ),
    vary: bool = typer.Option(
        False, "--vary", help="Shake: draw each photo's blur length, roll, exposure, noise and JPEG at random."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Shake: only the photos of this split: train, val or test (the held-out rule)."
    ),
    exposure: float = typer.Option(1.0, "--exposure", min=0.05, max=1.0, help="Shake: part of the path exposed."),
    noise: float = typer.Option(0.0, "--noise", min=0.0, help="Shake: Gaussian noise, std in 8-bit levels."),
    jpeg: int = typer.Option(0, "--jpeg", min=0, max=100, help="Shake: JPEG quality of the blurry image; 0: none."),
    seed: int = typer.Option(0, "--seed", help="Shake: random seed (each photo's shake follows from it and its name)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a folder that already holds pairs."),
    resume: bool = typer.Option(False, "--resume", help="Keep the pairs already there; make the missing ones."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, summary or warnings."),
) -> None:
    """Make blurry/sharp training pairs: average M frames of a video as GoPro was made, or blur
    sharp photos with random camera shake (--shake; folders are descended into)."""
    from mimocli.synth import AverageOptions, ShakeOptions, synth_from_stills, synth_from_video  # OpenCV, PyAV

    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite exclude each other", param_hint="--resume")
    if not shake and len(inputs) != 1:
        raise typer.BadParameter("averaging takes one video or frame folder; use --shake for photos")
    failed = 0

    def skip(e: ImageError) -> None:
        nonlocal failed
        failed += 1
        report(e)

    with warnings_to_stderr(quiet):
        progress = progress_bar(MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), quiet=quiet)
        task = progress.add_task("[bold]pairs", total=None, unit="pair")
        try:
            with progress:
                update = lambda done, total: progress.update(task, completed=done, total=total)  # noqa: E731
                if shake:
                    opts = ShakeOptions(
                        kernel,
                        exposure,
                        noise=noise,
                        jpeg=jpeg,
                        linear=linear,
                        gamma=gamma,
                        seed=seed,
                        roll=roll,
                        vary=vary,
                        split=split,
                    )
                    summary = synth_from_stills(list(inputs), output, opts, overwrite, resume, update, skip)
                else:
                    avg = AverageOptions(frames, stride, linear, gamma, limit)
                    summary = synth_from_video(inputs[0], output, avg, overwrite, resume, update)
        except MimoError as e:
            report(e)
            raise typer.Exit(1) from None
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    if as_json:
        out.print(json.dumps(summary.to_dict()), markup=False, highlight=False)
    else:
        out.print(str(output))
    if not quiet:
        kept = f", {summary.skipped} kept from before" if summary.skipped - failed > 0 else ""
        err.print(f"Wrote {summary.pairs} pair(s) to {output}{kept}")
    if failed:
        raise typer.Exit(1)
