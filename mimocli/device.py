"""Where and how a network runs: the device, the precision, memory (free memory, tile sizes, out of
memory) and compilation. Nothing here changes process-wide state except reuse_freed_memory()
and apply_process_settings(), which say so and are left to the caller."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import platform
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .errors import DeviceError
from .settings import PRECISIONS, RunSettings
from .tiling import round_down

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.qint8}

# Peak activation memory measured on CPU in float32 (MIMO-UNet and MIMO-UNet+ alike, since the
# widest tensors, the 224-channel fusion inputs at full resolution, do not depend on depth):
# 3.2 KB per pixel at 1024x1024, 4.1 KB at 256x256. Half precision halves it.
BYTES_PER_PIXEL_FP32 = 4096
MIN_TILE = 64  # below this the overlap dominates and the network sees too little context

# On CPU, big tensors run slower per pixel (memory bandwidth): a 4000x3000 photo with MIMO-UNet
# took 285 s at 1.7 GB peak in 512 px tiles but 408 s at 9.7 GB in the 1712 px tiles that memory
# alone allowed (2 cores, fp32). A 1280x720 photo is fastest whole (18.5 s).
CPU_TILE = 512
CPU_WHOLE_MAX_PIXELS = 1920 * 1088

# compile="auto" compiles once a run holds this many pixels in all; a device not listed never
# compiles by itself. CPU is not listed: with bf16, channels-last and reused memory, eager
# MIMO-UNet already runs at 91% and MIMO-UNet+ at 94% of the convolution floor (1280x720, 2
# cores, benchmarks/fast_path.py --compile), and compiling, which took 14-25 s, gained 8% on
# the one and lost 8% on the other. CUDA: not yet measured here; compiling with CUDA graphs takes
# tens of seconds and removes per-kernel launch costs worth a few milliseconds per frame, so
# only long videos (about 2,000 frames of 720p) qualify. MPS: never (inductor's MPS backend is
# young).
COMPILE_MIN_PIXELS: dict[str, int] = {"cuda": 2000 * 1280 * 720}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU. Raises DeviceError for one that is not available."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {device!r}", "use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but is not available", "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"{name} was requested but only {torch.cuda.device_count()} CUDA device(s) exist",
                "use --device cuda:0",
            )
    elif dev.type == "mps":
        if not _mps_available():
            raise DeviceError("Apple MPS was requested but is not available", "use --device cpu or auto")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {device!r}", "use auto, cpu, cuda, cuda:N or mps")
    return dev


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the processor multiplies bf16 in hardware (x86 AVX512-BF16 or AMX-BF16).

    oneDNN also runs bf16 on plain AVX-512 by emulation, which is no faster than fp32, so the
    flag is read from /proc/cpuinfo rather than from torch. False where that file does not exist.
    MIMO_CPU_BF16=1 or 0 overrides the flags (a container may hide them; the tests pin one answer
    for every process they start, Ray's workers included, so that no CPU changes their outcome).
    """
    forced = os.environ.get("MIMO_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True for a GPU of compute capability 8.0 (Ampere) or later, the first with bf16 tensor
    cores. torch.cuda.is_bf16_supported() also says yes to older GPUs, which emulate bf16 slowly,
    and it asks about the current device, not necessarily ``device``."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on an Ampere or later GPU (fp16 on older ones), bf16 on a CPU with native
    bf16 (with channels-last and reused memory 4.3x the speed of eager fp32 for MIMO-UNet at
    1280x720 on 2 AVX512-BF16 cores, within 1e-3 relative error), and fp32 otherwise.

    fp32 is the default on MPS because half precision there is known to give black frames.
    """
    p = precision.strip().lower()
    if p not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if p == "int8" and device.type != "cpu":
        raise DeviceError(f"int8 runs on the CPU, not on {device.type}", "use --device cpu, or bf16/fp16 on a GPU")
    return DTYPES[p]


def precision_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_KEEP_FREED_BYTES = 2**31
_reusing = False


def freed_memory_reused() -> bool:
    """Whether reuse_freed_memory() took effect in this process."""
    return _reusing


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for the next allocation instead of returning it to the system.

    By default glibc hands every block over 32 MB to the kernel with munmap and maps it afresh,
    zeroed page by page, the next time: a 1280x720 MIMO-UNet frame on CPU spent 1.3 of its 5.8 s
    in those page faults (bf16, 2 cores), and this brings it to 4.5 s. It is process-wide, which
    is why the library leaves it to the caller (the CLI turns it on for CPU work); the cost is
    that the process keeps up to its peak memory until it exits. It cannot be undone: glibc's
    adaptive default cannot be set back. Large blocks still come from mmap in threads other than
    the main one. Returns whether it took effect (False where the C library is not glibc).
    """
    global _reusing
    if _reusing:
        return True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _reusing = libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    return _reusing


def apply_process_settings(run: RunSettings, device: torch.device, cpus: int = 0) -> None:
    """The process-wide part of ``run``, in one place for every caller (the commands, the
    benchmarks, a Ray replica): torch's CPU threads (``run.threads``, else ``cpus`` where the
    caller knows its share of the machine, else torch's default) and, for CPU work with
    ``run.reuse_memory``, reuse_freed_memory()."""
    if run.threads or cpus:
        torch.set_num_threads(run.threads or cpus)
    if device.type == "cpu" and run.reuse_memory:
        reuse_freed_memory()


def free_memory(device: torch.device, meminfo: str = "/proc/meminfo") -> int:
    """Bytes the device can still give us.

    CUDA: what the driver has free plus what PyTorch's caching allocator holds but does not use,
    so the answer does not shrink after the first image. CPU: MemAvailable, or where there is no
    /proc (macOS) the free pages, or half the physical memory where even those are not told.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        # Unified memory: what Metal recommends for one process, less what it already holds.
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        return int(page * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError):  # macOS names no such value
        return int(page * os.sysconf("SC_PHYS_PAGES")) // 2


def auto_tile(device: torch.device, dtype: torch.dtype, batch: int = 1, fraction: float = 0.5) -> int:
    """The largest square tile side (multiple of 4) whose activations for ``batch`` images fit
    ``fraction`` of free memory."""
    per_px = BYTES_PER_PIXEL_FP32 if dtype == torch.float32 else BYTES_PER_PIXEL_FP32 // 2
    side = math.isqrt(int(free_memory(device) * fraction) // (per_px * batch))
    return max(MIN_TILE, round_down(side))


def choose_tile(device: torch.device, dtype: torch.dtype, height: int, width: int, batch: int = 1) -> int:
    """The tile side for --tile auto: what fits in memory, and on CPU 512 px beyond about 2 MP."""
    tile = auto_tile(device, dtype, batch)
    if device.type == "cpu" and height * width > CPU_WHOLE_MAX_PIXELS:
        tile = min(tile, CPU_TILE)
    return tile


def is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text
    )


def is_device_fault(error: BaseException) -> bool:
    """A CUDA error that poisons the context (illegal address, device-side assert, ECC): nothing
    on that device works afterwards, eager or compiled, so it must not be retried."""
    accelerator = getattr(torch, "AcceleratorError", ())
    return isinstance(error, accelerator) or (isinstance(error, RuntimeError) and "CUDA error" in str(error))


def release(device: torch.device) -> None:
    """Give the device's cached blocks back (after an out-of-memory, once its tensors are gone)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """cuDNN picks the fastest kernels for each shape (ours are fixed per run) for the duration of
    the block, and the caller's setting comes back after it."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def compile_model(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """torch.compile for inference: on CPU with the weights frozen into the graph (oneDNN fuses
    ReLU and residual adds into the convolutions), on CUDA with CUDA graphs (no launch overhead).
    The settings travel with this one compilation; inductor's global configuration is untouched."""
    if device.type == "cuda":
        return torch.compile(model, mode="reduce-overhead", dynamic=False)  # type: ignore[return-value]
    return torch.compile(model, options={"freezing": True}, dynamic=False)  # type: ignore[return-value]
