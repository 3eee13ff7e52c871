"""Measuring: device synchronisation, timing calls around it, percentiles, and peak memory (CUDA's
allocator, or on CPU the peak of the bytes malloc has handed out, glibc's mallinfo2)."""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import torch


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo2() -> Callable[[], int] | None:
    """Bytes that glibc's malloc has handed out and not taken back (all arenas), or None."""
    if sys.platform != "linux":
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc before 2.33
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        info = fn()
        return int(info.uordblks + info.hblkhd)

    return in_use


class MemoryMeter:
    """Peak memory of what runs inside ``with``: CUDA's allocator peak, or on the CPU the peak of
    the bytes malloc has handed out (glibc's mallinfo2, which counts memory that is reused as
    well as memory that is new), sampled every 2 ms; elsewhere the peak growth of the resident
    set."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._in_use = _mallinfo2() or self._rss

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._in_use() - self._start)

    def __enter__(self) -> MemoryMeter:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.device.type == "mps":
            self._start = torch.mps.current_allocated_memory()
        else:
            self._start = self._in_use()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self.device.type == "mps":
            self.peak = max(self.peak, torch.mps.driver_allocated_memory() - self._start)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._in_use() - self._start)


def best_time(fn: Callable[[], object], repeat: int, device: torch.device | None = None) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn`` after one untimed call, each ended by a
    device synchronisation (none for the CPU), gradients off."""
    dev = device or torch.device("cpu")
    with torch.inference_mode():
        fn()
        synchronize(dev)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            best = min(best, time.perf_counter() - t0)
    return best


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> tuple[float, list[float]]:
    """Seconds for ``warmup`` calls together, then seconds of each of ``iters`` calls, each
    bracketed by device synchronisations."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return warm, times
