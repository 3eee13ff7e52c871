"""`mimo train DATA --out DIR`: train or fine-tune MIMO-UNet on blurry/sharp pairs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mimocli.errors import WeightsError
from mimocli.registry import get_variant

from . import options
from .console import app, err, fail_on_error, out, progress_bar, report, warnings_to_stderr


@app.command("train")
def train_command(
    data: list[Path] = typer.Argument(
        ...,
        help="Pairs in any layout mimo eval reads (mimo synth writes one); with --shake, sharp photos or folders.",
        show_default=False,
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoint, metrics, plot, model.safetensors."),
    variant: str = typer.Option(
        "base",
        "--variant",
        "-m",
        callback=options.parse_variant,
        help="Architecture: base (8 blocks), plus (20) or lite (4 blocks, 16 channels).",
    ),
    init: str | None = typer.Option(
        None, "--init", help="Start from these weights: a variant name (downloads) or a file. Default: random."
    ),
    val: Path | None = typer.Option(None, "--val", help="Held-out pairs for validation PSNR."),
    shake: bool = typer.Option(
        False,
        "--shake",
        help="DATA is sharp photos: every crop gets a fresh random camera shake (non-uniform, with weak and no "
        "blur, noise and JPEG). Photos in the test split are never read; the validation split validates.",
    ),
    max_blur: float = typer.Option(
        36.0,
        "--max-blur",
        min=1.0,
        help="With --shake: the longest strong shake in pixels (a smaller value makes an easier start).",
    ),
    shake_on: str = typer.Option(
        "auto",
        "--shake-on",
        help="With --shake: render the blur on the training device with torch (device), or with OpenCV in CPU "
        "threads (workers). auto: device on a GPU, workers on the CPU (as fast there, and cheaper).",
        callback=options.one_of("auto", "device", "workers"),
    ),
    synthesize: bool = typer.Option(
        False,
        "--synthesize",
        help="DATA is sharp photos (camera shake) or a high-frame-rate video (frame averaging): make the pairs "
        "in OUT/synth first, as mimo synth does.",
    ),
    steps: int = typer.Option(3000, "--steps", "-n", min=1, help="Optimiser steps in all."),
    batch: int = typer.Option(4, "--batch", "-b", min=1, help="Crops per step."),
    crop: int = typer.Option(256, "--crop", min=16, help="Side of the random crops (a multiple of 4)."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Adam learning rate."),
    lr_halve_epochs: int = typer.Option(500, "--lr-halve-epochs", min=1, help="Halve the rate every N epochs."),
    schedule: str = typer.Option(
        "step",
        "--schedule",
        help="Learning rate: step (halve every --lr-halve-epochs) or cosine (from --lr to a hundredth of it at "
        "--steps).",
        callback=options.one_of("step", "cosine"),
    ),
    fft_weight: float = typer.Option(0.1, "--fft-weight", min=0.0, help="Weight of the frequency-domain L1 loss."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Random horizontal flips."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and of every batch."),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1, help="Steps between checkpoints."),
    val_every: int = typer.Option(500, "--val-every", min=1, help="Steps between validations."),
    log_every: int = typer.Option(10, "--log-every", min=1, help="Steps averaged into one metrics line."),
    mixed_precision: bool = typer.Option(True, "--mixed-precision/--fp32", help="CUDA: bf16 autocast."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    device: str = options.DEVICE,
    threads: int = options.THREADS,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Train MIMO-UNet (or XYDeblur, --variant xydeblur) on blurry/sharp pairs with the paper's
    recipe; export weights that `mimo deblur --weights` loads."""
    import torch  # and the rest: imported when the command runs, not for --help

    from mimocli.device import resolve_device, reuse_freed_memory
    from mimocli.train import TrainOptions, train
    from mimocli.weights import load_model

    if crop % 4:
        raise typer.BadParameter(f"{crop} is not a multiple of 4", param_hint="--crop")
    if shake and synthesize:
        raise typer.BadParameter("--shake and --synthesize exclude each other", param_hint="--shake")
    if not shake and not synthesize and any(d.suffix.lower() == ".zip" and d.is_file() for d in data):
        raise typer.BadParameter("a pack holds sharp photos: add --shake", param_hint="DATA")
    if len(data) > 1 and not shake:
        raise typer.BadParameter("pairs come from one folder; several inputs need --shake", param_hint="DATA")
    if threads:
        torch.set_num_threads(threads)
    if resolve_device(device).type == "cpu":
        reuse_freed_memory()  # activations are freed and reallocated every step: keep them mapped
    opts = TrainOptions(
        steps,
        batch,
        crop,
        lr,
        lr_halve_epochs,
        fft_weight,
        flip,
        seed,
        checkpoint_every,
        val_every,
        log_every,
        mixed_precision,
        shake,
        max_blur=max_blur,
        shake_on=shake_on,
        schedule=schedule,
    )
    with fail_on_error():
        v = get_variant(variant)
        if init:
            try:  # a variant name: its published weights; anything else is a weights file
                name, file = get_variant(init).name, None
            except WeightsError:
                name, file = v.name, init
            model = load_model(name, "cpu", file)
        else:
            torch.manual_seed(seed)
            model = v.arch.build(v.num_res, v.base_channel)
    if synthesize:
        data = [_synthesize(data[0], out_dir / "synth", seed)]
    with warnings_to_stderr(quiet):
        progress = progress_bar(
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            quiet=quiet,
        )
        task = progress.add_task("[bold]train", total=steps, loss="-", unit="step")
        with progress, fail_on_error():
            summary = train(
                model,
                list(data),
                out_dir,
                opts,
                device,
                val,
                resume,
                lambda step, total, loss: progress.update(task, completed=step, loss=f"{loss:.4f}"),
            )
    if as_json:
        out.print(json.dumps(summary.to_dict()), markup=False, highlight=False)
    else:
        out.print(summary.weights)
    if not quiet:
        val_text = f", validation PSNR {summary.val_psnr:.2f} dB" if summary.val_psnr is not None else ""
        err.print(
            f"Trained to step {summary.steps} in {summary.seconds:.1f} s: loss {summary.final_loss:.4f}{val_text}"
        )


def _synthesize(data: Path, pairs: Path, seed: int) -> Path:
    """Pairs made from ``data`` into ``pairs`` (kept between runs, so --resume reuses them)."""
    from mimocli.images import is_image_path
    from mimocli.synth import AverageOptions, ShakeOptions, synth_from_stills, synth_from_video

    with fail_on_error():
        try:
            if data.is_file() and not is_image_path(data):
                synth_from_video(data, pairs, AverageOptions(), resume=True)
            else:
                synth_from_stills([data], pairs, ShakeOptions(seed=seed), resume=True, on_error=report)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return pairs
