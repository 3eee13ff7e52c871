"""Deblurrer: a MIMO-UNet on a device at a precision, applied to whole images of any size."""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import DeviceError, NotFiniteError
from .settings import PRECISIONS
from .tiling import SCALES, TileGrid, pad_to_multiple, round_down, round_up

ProgressFn = Callable[[int, int], None]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Peak activation memory measured on CPU in float32 (MIMO-UNet and MIMO-UNet+ alike, since the
# widest tensors, the 224-channel fusion inputs at full resolution, do not depend on depth):
# 3.2 KB per pixel at 1024x1024, 4.1 KB at 256x256. Half precision halves it.
BYTES_PER_PIXEL_FP32 = 4096
MIN_TILE = 64  # below this the overlap dominates and the network sees too little context
DEFAULT_OVERLAP = 64  # pixels; 32 already agrees to 69 dB PSNR with the untiled output


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
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 (or fp16 without bf16 support) on CUDA, bf16 on a CPU with native bf16
    (with channels-last and reused memory 4.3x the speed of eager fp32 for MIMO-UNet at
    1280x720 on 2 AVX512-BF16 cores, within 1e-3 relative error), and fp32 otherwise.

    fp32 is the default on MPS because half precision there is known to give black frames.
    """
    p = precision.strip().lower()
    if p not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISIONS)}")
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return _DTYPES[p]


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give us (CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        # Unified memory: what Metal recommends for one process, less what it already holds.
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def auto_tile(device: torch.device, dtype: torch.dtype, fraction: float = 0.5) -> int:
    """The largest square tile side (multiple of 4) whose activations fit ``fraction`` of free memory."""
    per_px = BYTES_PER_PIXEL_FP32 if dtype == torch.float32 else BYTES_PER_PIXEL_FP32 // 2
    side = math.isqrt(int(free_memory(device) * fraction) // per_px)
    return max(MIN_TILE, round_down(side))


# On CPU, big tensors run slower per pixel (memory bandwidth): a 4000x3000 photo with MIMO-UNet
# took 285 s at 1.7 GB peak in 512 px tiles but 408 s at 9.7 GB in the 1712 px tiles that memory
# alone allowed (2 cores, fp32). A 1280x720 photo is fastest whole (18.5 s).
CPU_TILE = 512
CPU_WHOLE_MAX_PIXELS = 1920 * 1088


def choose_tile(device: torch.device, dtype: torch.dtype, height: int, width: int) -> int:
    """The tile side for --tile auto: what fits in memory, and on CPU 512 px beyond about 2 MP."""
    tile = auto_tile(device, dtype)
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


# compile="auto" compiles once a run holds this many pixels in all; a device not listed never
# compiles by itself. CPU is not listed: with bf16, channels-last and reused memory, eager
# MIMO-UNet already runs at 91% and MIMO-UNet+ at 94% of the convolution floor (1280x720, 2
# cores, benchmarks/fast_path.py --compile), and compiling, which took 14-25 s, gained 8% on
# the one and lost 8% on the other. CUDA: not yet measured here; compiling with CUDA graphs takes
# tens of seconds and removes per-kernel launch costs worth a few milliseconds per frame, so
# only long videos (about 2,000 frames of 720p) qualify. MPS: never (inductor's MPS backend is
# young).
COMPILE_MIN_PIXELS: dict[str, int] = {"cuda": 2000 * 1280 * 720}


# The eight symmetries of the square (4 rotations x optional flip), each with its inverse.
def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def _dihedral_inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -k, dims=(-2, -1))


def _finite(outs: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(o).all()) for o in outs)


DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


@dataclass
class DeblurResult:
    """The deblurred image in the input's layout and dtype, plus the coarser outputs by scale."""

    image: np.ndarray
    scales: dict[float, np.ndarray] = field(default_factory=dict)
    tiles: int = 1
    tile_size: int = 0
    fp32_fallbacks: int = 0


class Deblurrer:
    """Run a MIMO-UNet on images of any size.

    ``tile``: "auto" (fit the device's free memory), 0 (never tile) or a side in pixels.
    ``ensemble``: average over the 8 flips/rotations (MIMO-UNet++), 8x the work.
    ``channels_last``: NHWC activations, which oneDNN and cuDNN run faster; None: on for CPU and CUDA.
    ``compile``: torch.compile the network (weights frozen into the graph on CPU, CUDA graphs on
    CUDA). It pays only over many calls of one shape (video): the first call of each new shape
    compiles, which takes tens of seconds. "auto" leaves the choice to ``plan``, which a caller
    that knows its workload (deblur_video) calls. A compiler failure falls back to eager with a
    warning.
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        tile_overlap: int = DEFAULT_OVERLAP,
        ensemble: bool = False,
        channels_last: bool | None = None,
        compile: bool | str = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        if channels_last is None:
            channels_last = self.device.type in ("cpu", "cuda")
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        if isinstance(tile, str):
            if tile.strip().lower() != "auto":
                raise ValueError(f"tile must be 'auto', 0 or a positive size, not {tile!r}")
            self.tile: int | None = None
        else:
            if tile < 0:
                raise ValueError(f"tile must be 'auto', 0 or a positive size, not {tile}")
            self.tile = tile
        if tile_overlap < 0:
            raise ValueError(f"tile overlap must be >= 0, not {tile_overlap}")
        self.tile_overlap = tile_overlap
        self.ensemble = ensemble
        self.fp32_fallbacks = 0
        if isinstance(compile, str) and compile != "auto":
            raise ValueError(f"compile must be True, False or 'auto', not {compile!r}")
        self.compile: bool | str = compile
        self._compiled: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
        if compile is True:
            self._compiled = _compile(self.model, self.device)

    def plan(self, frames: int | None, height: int, width: int) -> bool:
        """Settle compile="auto" for a run of ``frames`` images of one size: compile when the
        pixels to process repay the compile time. Returns whether the network is compiled."""
        if self.compile == "auto":
            budget = COMPILE_MIN_PIXELS.get(self.device.type)
            self.compile = bool(budget and frames and frames * height * width >= budget)
            if self.compile:
                self._compiled = _compile(self.model, self.device)
        return self.compiled

    @property
    def compiled(self) -> bool:
        """True while the compiled network is in use (False after a fallback to eager)."""
        return self._compiled is not None

    @property
    def settings(self) -> dict[str, object]:
        """What the output's numbers depend on besides the model and the input."""
        return {
            "device": self.device.type,
            "precision": _name(self.dtype),
            "channels_last": self.channels_last,
            "compile": self.compile,
            "ensemble": self.ensemble,
        }

    # -- tensors ------------------------------------------------------------------------------
    @contextmanager
    def _autocast(self, dtype: torch.dtype) -> Iterator[None]:
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(self.device.type, dtype=dtype):
                yield

    def _net(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Video frames arrive as NHWC views: without channels-last they are made truly NCHW, or
        # the convolutions would follow the input's layout and the switch would change nothing.
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self._compiled is not None:
            try:
                if self.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()
                outs = [o.float() for o in self._compiled(x)]
                # CUDA graph outputs live in memory that the next replay overwrites.
                return [o.clone() for o in outs] if self.device.type == "cuda" else outs
            except Exception as e:
                if is_oom(e):
                    raise
                self._compiled = None
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); running eager", RuntimeWarning, 3)
        return [o.float() for o in self.model(x)]

    def _forward(self, x: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        with self._autocast(dtype):
            if not self.ensemble:
                return self._net(x)
            acc: list[torch.Tensor] | None = None
            for k, flip in DIHEDRAL:
                outs = [_dihedral_inverse(o, k, flip) for o in self._net(_dihedral(x, k, flip))]
                acc = outs if acc is None else [a + o for a, o in zip(acc, outs, strict=True)]
            assert acc is not None
            return [a / len(DIHEDRAL) for a in acc]

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B,3,h,w) on the device, h,w multiples of 4 -> 3 float32 outputs, coarse to fine."""
        outs = self._forward(x, self.dtype)
        if _finite(outs):
            return outs
        if self.dtype != torch.float32:
            self.fp32_fallbacks += 1
            warnings.warn(
                f"{_name(self.dtype)} output had NaN/Inf values; redone in fp32",
                RuntimeWarning,
                stacklevel=3,
            )
            outs = self._forward(x, torch.float32)
            if _finite(outs):
                return outs
        # A black or garbage image written as a success would be a lie: fail instead.
        raise NotFiniteError(
            "the network's output holds NaN/Inf values, in fp32 too",
            "the weights are damaged or are not MIMO-UNet weights: download or export them again",
        )

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Host tensor -> float32 in [0,1] on the device. Integer pixels travel as they are (a
        quarter of the bytes of float32), through pinned memory on CUDA, and are scaled there."""
        pinned = self.device.type == "cuda" and x.device.type == "cpu"
        if pinned:
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=pinned)
        if x.dtype == torch.uint8:
            return x.float() / 255
        if x.dtype in (torch.int32, torch.uint16):
            return x.float() / 65535
        return x.float()

    def run_tensor(
        self, x: torch.Tensor, on_progress: ProgressFn | None = None, keep_on_device: bool = False
    ) -> tuple[list[torch.Tensor], int, int]:
        """x: (B,3,H,W) float in [0,1] (or uint8 0..255, int32 0..65535) -> ([1/4, 1/2, full]
        float32 tensors, unclamped, cropped to ceil(H/s) x ceil(W/s)), number of tiles, tile side
        used (0: untiled). The outputs are on the CPU unless ``keep_on_device`` and untiled.

        Retries with tiles half the size when the device runs out of memory.
        Raises DeviceError when even the smallest tile does not fit.
        """
        h, w = x.shape[-2:]
        hp, wp = round_up(h), round_up(w)
        tile = choose_tile(self.device, self.dtype, hp, wp) if self.tile is None else self.tile or max(hp, wp)
        while True:
            try:
                with torch.inference_mode():
                    xp = pad_to_multiple(self._to_device(x))
                    outs, n = self._run_tiles(xp, tile, on_progress)
                break
            except Exception as e:
                if not is_oom(e):
                    raise
                _release(self.device)
                smaller = round_down(min(tile, max(hp, wp)) // 2)
                if smaller < MIN_TILE:
                    raise DeviceError(
                        f"out of memory on {self.device} even with {tile}px tiles",
                        "free memory on the device, or use --device cpu",
                    ) from e
                warnings.warn(
                    f"out of memory on {self.device} with {tile}px tiles; retrying with {smaller}px",
                    RuntimeWarning,
                    stacklevel=2,
                )
                tile = smaller
        crops = [o[..., : -(-h // s), : -(-w // s)] for o, s in zip(outs, SCALES, strict=True)]
        if not keep_on_device:
            crops = [o.cpu() for o in crops]
        return crops, n, (0 if n == 1 else tile)

    def _run_tiles(self, xp: torch.Tensor, tile: int, on_progress: ProgressFn | None) -> tuple[list[torch.Tensor], int]:
        hp, wp = xp.shape[-2:]
        grid = TileGrid.plan(hp, wp, tile, self.tile_overlap)
        total = len(grid)
        if on_progress:
            on_progress(0, total)
        if total == 1:
            outs = self._infer(xp)
            if on_progress:
                on_progress(1, 1)
            return outs, 1
        acc = [torch.zeros(xp.shape[0], 3, hp // s, wp // s) for s in SCALES]
        weight = [torch.zeros(1, 1, hp // s, wp // s) for s in SCALES]
        for i, t in enumerate(grid):
            patch = xp[..., t.y : t.y + t.h, t.x : t.x + t.w]
            for o, a, wsum, s in zip(self._infer(patch), acc, weight, SCALES, strict=True):
                win = grid.window(t, s)
                ys, xs = slice(t.y // s, (t.y + t.h) // s), slice(t.x // s, (t.x + t.w) // s)
                a[..., ys, xs] += o.cpu() * win
                wsum[..., ys, xs] += win
            if on_progress:
                on_progress(i + 1, total)
        return [a / wsum for a, wsum in zip(acc, weight, strict=True)], total

    # -- arrays -------------------------------------------------------------------------------
    def frames(self, batch: np.ndarray) -> list[np.ndarray]:
        """batch: (B,H,W,3) uint8/uint16 video frames of one size -> [full, 1/2, 1/4] arrays of the
        same dtype, (B,ceil(H/s),ceil(W/s),3). One forward pass per tile for the whole batch."""
        pixels = np.ascontiguousarray(batch)
        if pixels.dtype == np.uint16:
            pixels = pixels.astype(np.int32)  # torch's uint16 lacks arithmetic on older releases
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        if not (x.dtype == torch.uint8 or x.dtype == torch.int32):
            x = x.float() / _max_value(batch.dtype)
        outs, _tiles, _tile = self.run_tensor(x, keep_on_device=True)
        # Quantise on the device, so that only the 8- or 16-bit result crosses back to the host.
        arrays = [to_frames(o, batch.dtype) for o in outs]
        return arrays[::-1]

    def __call__(self, image: np.ndarray, on_progress: ProgressFn | None = None) -> DeblurResult:
        """image: (H,W), (H,W,1..4) uint8/uint16/float in [0,1] -> DeblurResult in the same layout.

        Grayscale goes through the network as three equal channels and comes back as one; an
        alpha channel (2 or 4 channels) is passed through untouched. The coarse outputs come
        back at 1/2 and 1/4 size with the alpha channel subsampled to match.
        """
        color, alpha = split_channels(image)
        gray = color.shape[2] == 1
        x = to_tensor(color)
        if gray:
            x = x.expand(-1, 3, -1, -1)
        fallbacks = self.fp32_fallbacks
        outs, tiles, tile_size = self.run_tensor(x, on_progress)
        arrays: list[np.ndarray] = []
        for o, s in zip(outs, SCALES, strict=True):
            if gray:
                o = o.mean(dim=1, keepdim=True)
            arr = from_tensor(o, image.dtype)
            a = None if alpha is None else alpha[::s, ::s]
            arrays.append(join_channels(arr, a, image.ndim == 2))
        return DeblurResult(
            image=arrays[2],
            scales={0.5: arrays[1], 0.25: arrays[0]},
            tiles=tiles,
            tile_size=tile_size,
            fp32_fallbacks=self.fp32_fallbacks - fallbacks,
        )


def _compile(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """torch.compile for inference: on CPU with the weights frozen into the graph (oneDNN fuses
    ReLU and residual adds into the convolutions), on CUDA with CUDA graphs (no launch overhead)."""
    if device.type == "cpu":
        import torch._inductor.config as inductor

        inductor.freezing = True
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(model, mode=mode, dynamic=False)  # type: ignore[return-value]


def _name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def split_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(H,W[,C]) -> colour (H,W,1 or 3) and alpha (H,W) or None. Raises ValueError on other shapes."""
    if image.ndim == 2:
        return image[:, :, None], None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an (H,W) or (H,W,1..4) image, got shape {image.shape}")
    c = image.shape[2]
    if c in (2, 4):
        return image[:, :, : c - 1], image[:, :, c - 1]
    return image, None


def rgb8(image: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,1..4) uint8/uint16 -> (H,W,3) uint8: alpha dropped, gray repeated, 16 bits
    rounded to 8 (x * 255 / 65535, halves up)."""
    color, _alpha = split_channels(image)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if color.dtype == np.uint16:
        color = np.floor(color.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(color)


def join_channels(color: np.ndarray, alpha: np.ndarray | None, squeeze: bool) -> np.ndarray:
    if alpha is not None:
        return np.concatenate([color, alpha[:, :, None]], axis=2)
    return color[:, :, 0] if squeeze else color


def _max_value(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def to_tensor(color: np.ndarray) -> torch.Tensor:
    """(H,W,C) uint8/uint16/float -> (1,C,H,W) float32 in [0,1]."""
    scale = _max_value(color.dtype)
    if not color.flags.writeable:
        color = color.copy()  # torch warns on read-only memory (and would share it)
    t = torch.from_numpy(np.ascontiguousarray(color)).float()
    return (t / scale).permute(2, 0, 1).unsqueeze(0)


def to_frames(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(B,C,H,W) float on any device -> (B,H,W,C) host array clamped to [0,1], and rounded half to
    even (not truncated) for integer dtypes."""
    t = t.permute(0, 2, 3, 1).clamp(0, 1)
    if np.dtype(dtype) == np.uint8:
        return t.mul(255).round().to(torch.uint8).cpu().numpy()
    if np.issubdtype(dtype, np.integer):
        return t.mul(_max_value(dtype)).round().to(torch.int32).cpu().numpy().astype(dtype)
    return t.cpu().numpy().astype(dtype)


def from_tensor(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """(1,C,H,W) float -> (H,W,C) clamped to [0,1] and, for integer dtypes, rounded (not truncated)."""
    return to_frames(t, dtype)[0]
