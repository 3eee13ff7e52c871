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
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .atomic import write_bytes_atomic
from .timing import best_time

SIZE = 256  # the square the model is timed on: big enough to be in the convolutions' regime
REPEAT = 2  # timed calls per precision, after one untimed
MARGIN = 0.95  # bf16 is chosen only when it takes less than this share of fp32's time

Timer = Callable[[nn.Module, bool], dict[str, float]]


def cache_file(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the measurements are kept: beside the weights (weights.side_cache), in ``cache_dir``
    (--cache-dir), $MIMO_CACHE_DIR or the hub's assets folder."""
    from .cache import side_cache

    return side_cache("precision.json", cache_dir)


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
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            times[name] = best_time(lambda: model(x), REPEAT)
    return times


def cpu_precision(
    model: nn.Module, channels_last: bool, cache: Path | None = None, measure: Timer | None = None
) -> tuple[torch.dtype, str]:
    """fp32 or bf16 for ``model`` on this CPU, whichever the measurement says is faster, and why.

    A measurement is taken once and cached (``cache``, default cache_file()); a cache that cannot
    be read is measured again, one that cannot be written is only not kept."""
    times, when = _measured(
        key(model, channels_last), lambda: (measure or time_precisions)(model, channels_last), cache
    )
    ratio = times["bf16"] / times["fp32"] if times["fp32"] > 0 else 1.0
    if ratio < MARGIN:
        return torch.bfloat16, f"auto: bf16 takes {ratio:.2f}x the time of fp32 on this CPU ({when})"
    return torch.float32, f"auto: bf16 would take {ratio:.2f}x the time of fp32 on this CPU ({when})"


def _measured(entry: str, measure: Callable[[], dict[str, float]], cache: Path | None) -> tuple[dict[str, float], str]:
    """The timings cached under ``entry``, or ``measure()``'s, cached (best effort); and whether
    they were measured now or before. A damaged cache file is measured again."""
    path = cache or cache_file()
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    times = known.get(entry)
    if isinstance(times, dict) and times and all(isinstance(v, (int, float)) for v in times.values()):
        return times, "measured before"
    times = measure()
    known[entry] = times
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
    except OSError:
        pass
    return times, "measured now"


def time_int8(float_model: nn.Module, dtype: torch.dtype, channels_last: bool, int8: nn.Module) -> dict[str, float]:
    """Seconds per call of the float model (at ``dtype``, as the Deblurrer runs it) and of the
    int8 model, on a SIZE x SIZE image: the best of REPEAT calls after one untimed."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(1, 3, SIZE, SIZE)
    runs = {
        "float": lambda: float_model(x.contiguous(memory_format=fmt)),
        "int8": lambda: int8(x),
    }
    times = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All inputs of this cat operator")
        for name, run in runs.items():
            with torch.autocast("cpu", dtype=dtype, enabled=name == "float" and dtype == torch.bfloat16):
                times[name] = best_time(run, REPEAT)
    return times


def int8_faster(
    float_model: nn.Module, dtype: torch.dtype, channels_last: bool, int8: nn.Module, cache: Path | None = None
) -> tuple[bool, str]:
    """Whether the int8 model (one the user allowed auto to use) beats the float one here, and why."""
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    entry = f"{key(float_model, channels_last)}, int8 against {name}"
    times, when = _measured(entry, lambda: time_int8(float_model, dtype, channels_last, int8), cache)
    ratio = times["int8"] / times["float"] if times["float"] > 0 else 1.0
    verb = "takes" if ratio < MARGIN else "would take"
    return (
        ratio < MARGIN,
        f"auto: int8 (allowed by mimo quantize --auto) {verb} {ratio:.2f}x the time of {name} ({when})",
    )
