"""`--precision auto` on a CPU decided by measurement, not by the processor's flags.

A CPU that multiplies bf16 natively (AVX512-BF16, AMX) is not always faster in bf16: on this
project's 2-core machine MIMO-UNet runs at the same speed in both, and the 16-channel lite model
takes twice as long in bf16. So where the flags allow bf16, the model is timed once in fp32 and
in bf16, as the Deblurrer runs it, and the faster is used; the figures are cached per machine,
torch version, thread count and model shape, so later runs pay nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .atomic import write_bytes_atomic
from .downloads import hf_home

SIZE = 256  # the square the model is timed on: big enough to be in the convolutions' regime
REPEAT = 2  # timed calls per precision, after one untimed
MARGIN = 0.95  # bf16 is chosen only when it takes less than this share of fp32's time

Timer = Callable[[nn.Module, bool], dict[str, float]]


def cache_file() -> Path:
    """Where the measurements are kept: beside mimocli's weights cache, in the hub's assets folder."""
    return hf_home("HF_ASSETS_CACHE", "assets") / "mimocli" / "default" / "precision.json"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def key(model: nn.Module, channels_last: bool) -> str:
    """What a measurement holds for: this processor, torch, thread count, model shape and layout."""
    shape = f"{getattr(model, 'num_res', '?')}x{getattr(model, 'base_channel', '?')}"
    layout = "NHWC" if channels_last else "NCHW"
    threads = torch.get_num_threads()
    return f"{_cpu_name()} ({os.cpu_count()} CPUs), torch {torch.__version__}, {threads} threads, {shape} {layout}"


def time_precisions(model: nn.Module, channels_last: bool) -> dict[str, float]:
    """Seconds per call of ``model`` on a SIZE x SIZE image in fp32 and in bf16 autocast (the
    best of REPEAT calls after one untimed)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(1, 3, SIZE, SIZE).contiguous(memory_format=fmt)
    times = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                model(x)
                best = float("inf")
                for _ in range(REPEAT):
                    t0 = time.perf_counter()
                    model(x)
                    best = min(best, time.perf_counter() - t0)
            times[name] = best
    return times


def cpu_precision(
    model: nn.Module, channels_last: bool, cache: Path | None = None, measure: Timer | None = None
) -> tuple[torch.dtype, str]:
    """fp32 or bf16 for ``model`` on this CPU, whichever the measurement says is faster, and why.

    A measurement is taken once and cached (``cache``, default cache_file()); a cache that cannot
    be read is measured again, one that cannot be written is only not kept."""
    path = cache or cache_file()
    entry = key(model, channels_last)
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    times = known.get(entry)
    measured = not (isinstance(times, dict) and all(isinstance(times.get(p), (int, float)) for p in ("fp32", "bf16")))
    if measured:
        times = (measure or time_precisions)(model, channels_last)
        known[entry] = times
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
        except OSError:
            pass
    assert isinstance(times, dict)
    ratio = times["bf16"] / times["fp32"] if times["fp32"] > 0 else 1.0
    when = "measured now" if measured else "measured before"
    if ratio < MARGIN:
        return torch.bfloat16, f"auto: bf16 takes {ratio:.2f}x the time of fp32 on this CPU ({when})"
    return torch.float32, f"auto: bf16 would take {ratio:.2f}x the time of fp32 on this CPU ({when})"
