"""Speed as data: time the network the way `mimo deblur` and `mimo video` run it, beside the plain
eager float32 NCHW baseline (how the authors' code runs), and return results; never prints.

Every timing is bracketed by a device synchronisation, warm-up calls are excluded, and both paths
do the same work: 8-bit frames in host memory in, 8-bit frames in host memory out.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .arch import MIMOUNet
from .ceiling import conv_ceiling
from .checkpoints import Network
from .device import freed_memory_reused, resolve_device, reuse_freed_memory
from .engine import Deblurrer, build_deblurrer
from .pixels import rgb8, to_frames
from .registry import Variant
from .settings import ProgressFn, RunSettings
from .tiling import pad_to_multiple
from .timing import MemoryMeter, percentile, time_calls
from .video import VideoOptions, VideoSummary, deblur_video

StageFn = Callable[[str], None]  # the stage that starts, by name
PIXELS_720P = 1280 * 720


@dataclass
class BenchResult:
    """One configuration at one size. Times are per frame (a batch's time divided by its size)."""

    variant: str
    mode: str  # "baseline" (eager fp32 NCHW) or "fast" (what mimocli runs by default)
    device: str
    precision: str
    precision_reason: str  # "as asked", "auto", or what the measurement behind auto found
    channels_last: bool
    compiled: bool
    reuse_memory: bool  # glibc kept freed memory for reuse (CPU)
    width: int
    height: int
    batch: int
    warmup: int
    iters: int
    warmup_seconds: float  # all warm-up calls, compilation included
    median_ms: float
    p90_ms: float
    fps: float
    tflops: float  # achieved TFLOP/s: the counted work of a frame divided by the median time
    peak_memory_mb: float  # CUDA: peak allocated; CPU: peak of malloc's bytes in use (mallinfo2)
    speedup: float | None = None  # baseline median / this median, measured in the same run
    rel_error: float | None = None  # ||fast - baseline|| / ||baseline|| on the full-scale output
    psnr_db: float | None = None  # between the fast and baseline full-scale outputs, in [0, 1]
    ceiling_tflops: float | None = None  # one 3x3 convolution's rate here in this precision (mimocli.ceiling)
    backend: str = "torch"  # what ran the network: torch, or openvino (--backend, auto's choice)
    times_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_model(num_res: int, seed: int = 0, base_channel: int = 32) -> MIMOUNet:
    """A MIMO-UNet with seeded random weights: it costs exactly what the published weights do."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MIMOUNet(num_res, base_channel).eval()


def bench_model(variant: Variant, weights: str | None = None) -> Network:
    """The model a benchmark of ``variant`` times: ``weights`` (a path or a registered name), or
    seeded random weights of the variant's network and shape (they cost what the published ones
    do); MIMO-UNet++ as a self-ensemble, set here once."""
    if weights:
        from .weights import load_model

        model = load_model(variant.name, "cpu", weights)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = variant.arch.build(variant.num_res, variant.base_channel).eval()
    model.ensemble = variant.ensemble
    return model


def tflop_per_frame(variant: Variant, width: int, height: int) -> float:
    """Counted work of one frame: the variant's TFLOP at 1280x720 scaled by pixels."""
    return variant.tflop_per_720p * width * height / PIXELS_720P


def sample_frames(width: int, height: int, batch: int, image: np.ndarray | None = None) -> np.ndarray:
    """(batch,H,W,3) uint8 frames: ``image`` tiled and cropped to the size, or seeded noise."""
    if image is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    img = rgb8(image)
    reps = (math.ceil(height / img.shape[0]), math.ceil(width / img.shape[1]), 1)
    frame = np.tile(img, reps)[:height, :width]
    return np.stack([frame] * batch)  # a writable copy


def _baseline_fn(model: nn.Module, device: torch.device, frames: np.ndarray, keep: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """The upstream way: float32 NCHW tensors, eager, under no_grad; same 8-bit in and out."""

    def run() -> None:
        with torch.no_grad():
            x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).contiguous().float() / 255
            h, w = x.shape[-2:]
            out = model(pad_to_multiple(x))[2][..., :h, :w]
            keep["baseline"] = out
            to_frames(out, np.dtype(np.uint8))

    return run


def _fast_fn(deblurrer: Deblurrer, frames: np.ndarray, keep: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    """Exactly Deblurrer.frames, keeping the float output for the error figures."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)

    def run() -> None:
        outs, _, _ = deblurrer.run_tensor(x, keep_on_device=True)
        keep["fast"] = outs[2]
        for o in outs:
            to_frames(o, np.dtype(np.uint8))

    return run


def _result(
    variant: Variant,
    mode: str,
    d: Deblurrer | None,
    device: torch.device,
    frames: np.ndarray,
    warmup: int,
    warm: float,
    times: list[float],
    peak: int,
) -> BenchResult:
    batch, height, width = frames.shape[:3]
    per_frame = [t / batch * 1000 for t in times]
    median = statistics.median(per_frame)
    return BenchResult(
        variant=variant.name,
        mode=mode,
        device=str(device),
        precision="fp32" if d is None else str(d.settings["precision"]),
        precision_reason="as asked" if d is None else d.precision_reason,
        backend="torch" if d is None else d.backend,
        channels_last=False if d is None else d.channels_last,
        compiled=False if d is None else d.compiled,
        reuse_memory=device.type == "cpu" and freed_memory_reused(),
        width=width,
        height=height,
        batch=batch,
        warmup=warmup,
        iters=len(times),
        warmup_seconds=round(warm, 3),
        median_ms=median,
        p90_ms=percentile(per_frame, 90),
        fps=1000 / median,
        tflops=tflop_per_frame(variant, width, height) / (median / 1000),
        ceiling_tflops=conv_ceiling(str(device), "fp32" if d is None else str(d.settings["precision"])),
        peak_memory_mb=peak / 2**20,
        times_ms=per_frame,
    )


@dataclass
class Baseline:
    """A baseline's figures and its full-scale output, for the fast paths to compare against."""

    result: BenchResult
    output: torch.Tensor


def _check(width: int, height: int, batch: int, warmup: int, iters: int) -> None:
    if width < 4 or height < 4:
        raise ValueError(f"size {width}x{height} is too small (at least 4x4)")
    if batch < 1 or iters < 1 or warmup < 0:
        raise ValueError("batch and iters must be >= 1 and warmup >= 0")


@dataclass(frozen=True)
class BenchCase:
    """A model at a frame size: what one baseline row and its fast rows time."""

    model: nn.Module
    variant: Variant
    width: int
    height: int


def bench_baseline(
    case: BenchCase,
    device: str | torch.device = "auto",
    batch: int = 1,
    warmup: int = 1,
    iters: int = 5,
    image: np.ndarray | None = None,
) -> Baseline:
    """Time the eager fp32 NCHW baseline on (batch, height, width) frames. The model is copied.

    Run baselines before ``reuse_freed_memory``: after it, they too run faster than the
    authors' code would (their result says so in ``reuse_memory``).
    Raises ValueError for bad sizes or counts, DeviceError for an unavailable device.
    """
    _check(case.width, case.height, batch, warmup, iters)
    dev = resolve_device(device)
    frames = sample_frames(case.width, case.height, batch, image)
    keep: dict[str, torch.Tensor] = {}
    base_model = copy.deepcopy(case.model).eval().float().to(dev)
    with MemoryMeter(dev) as mem:
        warm, times = time_calls(_baseline_fn(base_model, dev, frames, keep), dev, warmup, iters)
    result = _result(case.variant, "baseline", None, dev, frames, warmup, warm, times, mem.peak)
    return Baseline(result, keep["baseline"].float().cpu())


def bench_fast(
    case: BenchCase,
    run: RunSettings,
    warmup: int = 1,
    iters: int = 5,
    image: np.ndarray | None = None,
    baseline: Baseline | None = None,
) -> BenchResult:
    """Time the Deblurrer as ``run`` configures it (exactly Deblurrer.frames, ``run.batch``
    frames a call) on the same frames as bench_baseline; with ``baseline``, add the speed-up and
    the error against it.

    Raises ValueError for bad sizes or counts, DeviceError for an unavailable device or precision.
    """
    _check(case.width, case.height, run.batch, warmup, iters)
    frames = sample_frames(case.width, case.height, run.batch, image)
    keep: dict[str, torch.Tensor] = {}
    d = build_deblurrer(case.model, run)
    with MemoryMeter(d.device) as mem:
        warm, times = time_calls(_fast_fn(d, frames, keep), d.device, warmup, iters)
    fast = _result(case.variant, "fast", d, d.device, frames, warmup, warm, times, mem.peak)
    if baseline is not None:
        ref, got = baseline.output, keep["fast"].float().cpu()
        fast.speedup = baseline.result.median_ms / fast.median_ms
        fast.rel_error = float((got - ref).norm() / ref.norm())
        mse = float(((got.clamp(0, 1) - ref.clamp(0, 1)) ** 2).mean())
        fast.psnr_db = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    return fast


def bench_suite(
    cases: Sequence[BenchCase],
    run: RunSettings = RunSettings(tile=0),  # noqa: B008  (frozen)
    warmup: int = 1,
    iters: int = 5,
    baseline: bool = True,
    image: np.ndarray | None = None,
    compile: Sequence[bool] | None = None,
    on_progress: StageFn | None = None,
) -> list[BenchResult]:
    """Every case's baseline first (in a process whose allocator is untouched, as the authors'
    code runs), then, on CPU with ``run.reuse_memory``, ``reuse_freed_memory()``, then the fast
    path of each case as ``run`` says, once per value of ``compile`` when given, such as (False,
    True). Results come grouped by case: its baseline, then its fast rows.

    Raises ValueError for bad sizes or counts, DeviceError for an unavailable device or precision.
    """
    for c in cases:
        _check(c.width, c.height, run.batch, warmup, iters)
    dev = resolve_device(run.device)
    base: dict[int, Baseline] = {}
    if baseline:
        for i, c in enumerate(cases):
            if on_progress:
                on_progress(f"{c.variant.name} {c.width}x{c.height} baseline")
            base[i] = bench_baseline(c, dev, run.batch, warmup, iters, image)
    if dev.type == "cpu" and run.reuse_memory:
        reuse_freed_memory()
    results = []
    for i, c in enumerate(cases):
        if i in base:
            results.append(base[i].result)
        # int8 is shown beside the float fast path it replaces, in the same run.
        precisions = ("auto", "int8") if run.precision == "int8" else (run.precision,)
        for precision, compiled in (
            (p, k) for p in precisions for k in ((run.compile,) if compile is None else compile)
        ):
            if on_progress:
                on_progress(
                    f"{c.variant.name} {c.width}x{c.height} {precision}" + (" compiled" if compiled is True else "")
                )
            step = run.replace(compile=compiled, precision=precision)
            results.append(bench_fast(c, step, warmup, iters, image, base.get(i)))
    return results


def bench_video(
    path: str | os.PathLike[str],
    deblurrer: Deblurrer,
    options: VideoOptions = VideoOptions(),  # noqa: B008  (frozen)
    on_progress: ProgressFn | None = None,
) -> VideoSummary:
    """Run the whole `mimo video` pipeline on ``path`` into a temporary file that is then deleted;
    the summary splits the time into decode, inference and encode.

    Raises what deblur_video raises (VideoError for a bad input).
    """
    src = Path(path)
    suffix = src.suffix if src.is_file() else ".mkv"
    with tempfile.TemporaryDirectory(prefix="mimo-bench-") as tmp:
        out = Path(tmp) / f"bench{suffix}"
        opts = dataclasses.replace(options, overwrite=True, resume=False)
        return deblur_video(src, out, deblurrer, opts, on_progress)
