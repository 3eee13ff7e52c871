"""`--precision auto` (and `--backend auto`) on a CPU decided by measurement, not by the
processor's flags.

A CPU that multiplies bf16 natively (AVX512-BF16, AMX) is not always faster in bf16: on this
project's 2-core machine MIMO-UNet runs at the same speed in both, and the 16-channel lite model
takes twice as long in bf16. So where the flags allow bf16, the model is timed once in fp32 and
in bf16, as the Deblurrer runs it, and the faster is used; the figures are cached per machine,
torch version, thread count and model shape, so later runs pay nothing. Where OpenVINO is
installed (mimocli.openvino_backend), it is timed beside torch the same way (cpu_choice).
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
from .device import DTYPES
from .timing import best_time

SIZE = 256  # the square the model is timed on: big enough to be in the convolutions' regime
REPEAT = 2  # timed calls per precision, after one untimed
MARGIN = 0.95  # bf16 is chosen only when it takes less than this share of fp32's time

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


def torch_runner(model: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], object]:
    """``model`` as the Deblurrer runs it on the CPU in ``dtype``: through oneDNN's fused
    convolutions where the network is one mimocli.fusion knows, else in autocast."""
    from . import fusion

    if fusion.available() and fusion.fusable(model):
        fused = fusion.fuse(model, dtype)
        return lambda x: fused(x.to(dtype))

    def autocast(x: torch.Tensor) -> object:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return model(x)

    return autocast


def time_precisions(model: nn.Module, channels_last: bool) -> dict[str, float]:
    """Seconds per call of ``model`` on a SIZE x SIZE image in fp32 and in bf16, as the Deblurrer
    runs it (torch_runner), the best of REPEAT calls after one untimed."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(1, 3, SIZE, SIZE).contiguous(memory_format=fmt)
    times = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        run = torch_runner(model, dtype)
        times[name] = best_time(lambda run=run: run(x), REPEAT)  # type: ignore[misc]
    return times


def time_openvino(converted: object, precisions: tuple[str, ...]) -> dict[str, float]:
    """Seconds per call of the OpenVINO network (openvino_backend) on a SIZE x SIZE image at each
    of ``precisions``, the best of REPEAT calls after one untimed (which is when it compiles)."""
    from .openvino_backend import OpenVINONet

    x = torch.rand(1, 3, SIZE, SIZE)
    times = {}
    for name in precisions:
        net = OpenVINONet(converted, DTYPES[name])
        times[name] = best_time(lambda net=net: net(x), REPEAT)  # type: ignore[misc]
    return times


BACKEND_NAMES = {"torch": "", "openvino": "OpenVINO "}


def cpu_choice(
    model: nn.Module,
    channels_last: bool,
    precisions: tuple[str, ...],
    backends: tuple[str, ...],
    converted: Callable[[], object] | None = None,
    cache: Path | None = None,
) -> tuple[str, torch.dtype, str]:
    """The backend and precision to run ``model`` with on this CPU, of ``backends`` (torch,
    openvino) x ``precisions`` (fp32, bf16), by measurement, and why.

    The candidates are taken in that order of preference (torch before OpenVINO, fp32 before
    bf16), and a later one replaces the one chosen so far only when it takes less than MARGIN of
    its time. torch's timings are cpu_precision's (one cache entry); OpenVINO's (``converted``
    makes its network when first needed) have an entry of their own, with its version. Each is
    measured once per machine and cached, as cpu_precision's are."""
    times: dict[tuple[str, str], float] = {}
    whens = set()
    entry = key(model, channels_last)
    if "torch" in backends:
        found, when = _measured(entry, lambda: time_precisions(model, channels_last), cache, precisions)
        times.update({("torch", p): found[p] for p in precisions})
        whens.add(when)
    if "openvino" in backends:
        from .openvino_backend import version

        ov_entry = f"{entry}, OpenVINO {version()}"
        assert converted is not None
        found, when = _measured(ov_entry, lambda: time_openvino(converted(), precisions), cache, precisions)
        times.update({("openvino", p): found[p] for p in precisions})
        whens.add(when)
    order = [(b, p) for b in backends for p in precisions]
    chosen = order[0]
    for candidate in order[1:]:
        if times[candidate] < MARGIN * times[chosen]:
            chosen = candidate
    first = order[0]
    other = chosen if chosen != first else min(order[1:], key=lambda c: times[c])
    ratio = times[other] / times[first] if times[first] > 0 else 1.0
    verb = "takes" if chosen != first else "would take"
    said = "measured now" if "measured now" in whens else "measured before"

    def name(c: tuple[str, str]) -> str:
        return BACKEND_NAMES[c[0]] + c[1]

    reason = f"auto: {name(other)} {verb} {ratio:.2f}x the time of {name(first)} on this CPU ({said})"
    return chosen[0], DTYPES[chosen[1]], reason


def cpu_precision(model: nn.Module, channels_last: bool, cache: Path | None = None) -> tuple[torch.dtype, str]:
    """fp32 or bf16 for ``model`` on this CPU through torch, whichever the measurement says is
    faster, and why (cpu_choice with torch alone).

    A measurement is taken once and cached (``cache``, default cache_file()); a cache that cannot
    be read is measured again, one that cannot be written is only not kept."""
    _, dtype, reason = cpu_choice(model, channels_last, ("fp32", "bf16"), ("torch",), cache=cache)
    return dtype, reason


def _measured(
    entry: str, measure: Callable[[], dict[str, float]], cache: Path | None, needed: tuple[str, ...] = ()
) -> tuple[dict[str, float], str]:
    """The timings cached under ``entry``, or ``measure()``'s, cached (best effort); and whether
    they were measured now or before. A damaged cache file, or an entry without one of
    ``needed``, is measured again."""
    path = cache or cache_file()
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    times = known.get(entry)
    if (
        isinstance(times, dict)
        and times
        and all(isinstance(v, (int, float)) for v in times.values())
        and all(n in times for n in needed)
    ):
        return times, "measured before"
    times = measure()
    known[entry] = times
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())
    except OSError:
        pass
    return times, "measured now"


def time_int8(
    float_run: Callable[[torch.Tensor], object], channels_last: bool, int8: Callable[[torch.Tensor], object]
) -> dict[str, float]:
    """Seconds per call of the float network (``float_run``, as the run would run it) and of the
    int8 one, on a SIZE x SIZE image: the best of REPEAT calls after one untimed."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(1, 3, SIZE, SIZE)
    runs = {
        "float": lambda: float_run(x.contiguous(memory_format=fmt)),
        "int8": lambda: int8(x),
    }
    times = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All inputs of this cat operator")
        for name, run in runs.items():
            times[name] = best_time(run, REPEAT)
    return times


def int8_faster(
    float_model: nn.Module,
    dtype: torch.dtype,
    channels_last: bool,
    int8: Callable[[], Callable[[torch.Tensor], object]],
    cache: Path | None = None,
    converted: object | None = None,
    int8_name: str = "int8",
) -> tuple[bool, str]:
    """Whether the int8 network (one the user allowed auto to use; ``int8`` makes it runnable,
    when it is to be timed) beats the float one here, and why. The float one runs as chosen:
    through torch, or OpenVINO's ``converted`` network."""
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    if converted is not None:
        from .openvino_backend import version

        name = f"OpenVINO {version()} {name}"

    def float_run() -> Callable[[torch.Tensor], object]:  # made only when it is to be timed
        if converted is None:
            return torch_runner(float_model, dtype)
        from .openvino_backend import OpenVINONet

        return OpenVINONet(converted, dtype)

    entry = f"{key(float_model, channels_last)}, {int8_name} against {name}"
    times, when = _measured(entry, lambda: time_int8(float_run(), channels_last, int8()), cache)
    ratio = times["int8"] / times["float"] if times["float"] > 0 else 1.0
    verb = "takes" if ratio < MARGIN else "would take"
    return (
        ratio < MARGIN,
        f"auto: {int8_name} (allowed by mimo quantize --auto) {verb} {ratio:.2f}x the time of {name} ({when})",
    )


def int8_backend(
    float_model: nn.Module,
    channels_last: bool,
    torch_int8: nn.Module,
    openvino_int8: Callable[[], Callable[[torch.Tensor], object]],
    cache: Path | None = None,
) -> tuple[str, str]:
    """torch or openvino for --precision int8 (backend auto), by timing the two int8 networks once
    on a SIZE x SIZE image (cached as the other measurements are), and why: OpenVINO's replaces
    torch's only when it takes less than MARGIN of its time."""
    from .openvino_backend import INT8_RECIPE, version

    def measure() -> dict[str, float]:
        x = torch.rand(1, 3, SIZE, SIZE)
        ov = openvino_int8()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="All inputs of this cat operator")
            return {"torch": best_time(lambda: torch_int8(x), REPEAT), "openvino": best_time(lambda: ov(x), REPEAT)}

    entry = f"{key(float_model, channels_last)}, int8 against OpenVINO {version()} int8 ({INT8_RECIPE})"
    times, when = _measured(entry, measure, cache, ("torch", "openvino"))
    ratio = times["openvino"] / times["torch"] if times["torch"] > 0 else 1.0
    verb = "takes" if ratio < MARGIN else "would take"
    return (
        "openvino" if ratio < MARGIN else "torch",
        f"auto: OpenVINO int8 {verb} {ratio:.2f}x the time of int8 on this CPU ({when})",
    )
