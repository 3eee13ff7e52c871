"""`mimo bench`: how fast the network runs here, against the eager fp32 baseline, or a whole video."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mimocli.errors import MimoError
from mimocli.registry import DEFAULT_VARIANT, VARIANTS, Variant, get_variant
from mimocli.settings import RunSettings

if TYPE_CHECKING:
    from mimocli.bench import BenchResult

from . import options
from .console import app, err, fail_on_error, out, print_table, progress_bar, report, warnings_to_stderr
from .video import parse_time

_SIZE = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


def parse_size(value: str) -> tuple[int, int]:
    m = _SIZE.match(value)
    if not m or int(m.group(1)) < 4 or int(m.group(2)) < 4:
        raise typer.BadParameter(f"{value!r}: use WIDTHxHEIGHT, such as 1280x720 (at least 4x4)")
    return int(m.group(1)), int(m.group(2))


def variants_for(name: str) -> list[Variant]:
    """'all' is MIMO-UNet, MIMO-UNet+ and XYDeblur (the networks with published weights, each at
    its published shape); anything else one variant."""
    if name.strip().lower() == "all":
        return [v for v in VARIANTS if v.name in ("mimo-unet", "mimo-unet-plus", "xydeblur")]
    return [get_variant(name)]


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code."""
    import torch

    from mimocli.device import cpu_has_native_bf16

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _path(r: BenchResult) -> str:
    if r.mode == "baseline":
        return "baseline fp32"
    if r.backend == "openvino":  # its own layout and fusions: none of torch's switches apply
        return f"OpenVINO {r.precision}"
    parts = [r.precision, "NHWC" if r.channels_last else "NCHW"]
    if r.compiled:
        parts.append("compiled")
    if r.reuse_memory:
        parts.append("reuse")
    return " ".join(parts)


def _table(results: list[BenchResult]) -> Table:
    table = Table(title=f"mimo bench on {results[0].device}", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("variant", "size", "batch", "path", "ms/frame", "p90 ms", "frames/s", "TFLOP/s", "peak MB"):
        table.add_column(name, justify="left" if name in ("variant", "path") else "right", no_wrap=True)
    for name in ("of peak", "speed-up", "rel. error", "PSNR dB"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            r.variant,
            f"{r.width}x{r.height}",
            str(r.batch),
            _path(r),
            f"{r.median_ms:.1f}",
            f"{r.p90_ms:.1f}",
            f"{r.fps:.3g}",
            f"{r.tflops:.3g}",
            f"{r.peak_memory_mb:.0f}",
            f"{r.tflops / r.ceiling_tflops:.0%}" if r.ceiling_tflops else "-",
            "1.00x" if r.mode == "baseline" else (f"{r.speedup:.2f}x" if r.speedup else "-"),
            f"{r.rel_error:.1e}" if r.rel_error is not None else "-",
            f"{r.psnr_db:.1f}" if r.psnr_db is not None else "-",
        )
    return table


@app.command()
@options.run_options(omit=("tile", "tile_overlap", "ensemble", "compile"), fixed={"tile": 0})
def bench(
    variant: str = typer.Option(
        DEFAULT_VARIANT,
        "--variant",
        "-m",
        callback=options.parse_variant_or_all,
        help="base, plus, plusplus, xydeblur, any variant name, or all (base, plus and xydeblur).",
    ),
    run: RunSettings = RunSettings(),  # noqa: B008  (the run options take its place)
    sizes: list[str] = typer.Option(["1280x720"], "--size", "-s", help="Frame size WxH; repeat for several."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed calls first (compilation happens here)."),
    iters: int = typer.Option(5, "--iters", "-n", min=1, help="Timed calls; median and p90 over them."),
    compile: bool | None = options.compile_option("off; with --video as for mimo video"),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="Also time the eager fp32 NCHW baseline for the speed-up."
    ),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help="Time these weights instead of random ones (the cost is the same)."
    ),
    image: Path | None = typer.Option(
        None, "--image", help="Frames cut from this photo instead of noise (for the error figures)."
    ),
    video: Path | None = typer.Option(
        None, "--video", help="Time the whole `mimo video` pipeline on this file: decode, inference, encode."
    ),
    duration: str | None = typer.Option(None, "--duration", help="With --video: only the first seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or warnings."),
) -> None:
    """Time MIMO-UNet on this machine against the eager fp32 baseline.

    Reports ms per frame (median, p90), frames/s, TFLOP/s, peak memory, and the speed-up over the
    baseline and the error against it, measured in the same run.
    """
    from mimocli.bench import BenchCase, bench_model, bench_suite  # torch and the rest: now, not for --help
    from mimocli.device import apply_process_settings, resolve_device
    from mimocli.images import read_image

    frame_sizes = [parse_size(s) for s in sizes]
    with fail_on_error():
        chosen = variants_for(variant)
        # Threads now; memory reuse after the baselines (bench_suite), which run as upstream's code does.
        apply_process_settings(run.replace(reuse_memory=False), resolve_device(run.device))
    if video is not None:
        video_run = run.replace(compile="auto" if compile is None else compile)
        _bench_video(video, chosen[0], weights, video_run, duration, as_json, quiet)
        return
    pixels = None
    if image is not None:
        with fail_on_error():
            pixels = read_image(image).pixels
    with warnings_to_stderr(quiet):
        progress = progress_bar(quiet=quiet)
        with progress:
            task = progress.add_task("bench", total=None)
            with fail_on_error():
                cases = []
                for v in chosen:
                    model = bench_model(v, weights)
                    cases += [BenchCase(model, v, w, h) for w, h in frame_sizes]
            try:
                results = bench_suite(
                    cases,
                    run.replace(compile=bool(compile)),
                    warmup,
                    iters,
                    baseline,
                    pixels,
                    on_progress=lambda text: progress.update(task, description=text),
                )
            except MimoError as e:
                report(e)
                raise typer.Exit(1) from None
    if as_json:
        payload = {"machine": machine(), "weights": weights or "random", "results": [r.to_dict() for r in results]}
        out.print(json.dumps(payload), markup=False, highlight=False)
        return
    print_table(_table(results))
    info = machine()
    out.print(
        f"torch {info['torch']}, {info['threads']} CPU threads"
        + (f", {info['gpu']}" if "gpu" in info else "")
        + f"; {'weights ' + weights if weights else 'random weights (same cost as the published ones)'}; "
        f"median of {iters} after {warmup} warm-up call(s); TFLOP/s against "
        f"{', '.join(f'{v.tflop_per_720p} TFLOP ({v.name})' for v in chosen)} per 1280x720 frame; of peak: "
        "against one 3x3 convolution of 64 channels measured here in the same precision."
    )
    for variant_name, reason in dict.fromkeys((r.variant, r.precision_reason) for r in results if r.mode != "baseline"):
        if reason.startswith("auto:"):
            out.print(f"{variant_name}: {reason}", markup=False)


def _bench_video(
    path: Path,
    variant: Variant,
    weights: str | None,
    run: RunSettings,
    duration: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    from mimocli.bench import bench_model, bench_video
    from mimocli.device import apply_process_settings, resolve_device
    from mimocli.engine import build_deblurrer
    from mimocli.video import VideoOptions

    with fail_on_error():
        model = bench_model(variant, weights)
        apply_process_settings(run, resolve_device(run.device))
        deblurrer = build_deblurrer(model, run.replace(tile="auto"))
    opts = VideoOptions(end=parse_time(duration))
    with warnings_to_stderr(quiet):
        progress = progress_bar(quiet=quiet)
        task = progress.add_task(f"[bold]{escape(path.name)}", total=None, unit="frame")
        with progress, fail_on_error():
            s = bench_video(
                path, deblurrer, opts, lambda done, total: progress.update(task, completed=done, total=total)
            )
    if as_json:
        payload = {"machine": machine(), "variant": variant.name, "settings": deblurrer.settings, "video": s.to_dict()}
        out.print(json.dumps(payload), markup=False, highlight=False)
        return
    title = f"mimo bench --video {escape(path.name)} ({variant.name}, {deblurrer.device})"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("frames", "size", "seconds", "frames/s", "decode s", "inference s", "encode s"):
        table.add_column(name, justify="right")
    table.add_row(
        str(s.deblurred),
        f"{s.width}x{s.height}",
        f"{s.seconds:.2f}",
        f"{s.fps:.3g}",
        f"{s.decode_seconds:.2f}",
        f"{s.infer_seconds:.2f}",
        f"{s.encode_seconds:.2f}",
    )
    print_table(table)
    busy = s.decode_seconds + s.infer_seconds + s.encode_seconds
    if busy > 0:
        share = ", ".join(
            f"{name} {100 * t / busy:.1f}%"
            for name, t in (("decode", s.decode_seconds), ("inference", s.infer_seconds), ("encode", s.encode_seconds))
        )
        err.print(f"Busy time: {share} (the three run in parallel threads; the slowest sets the pace)")
