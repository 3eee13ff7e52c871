"""Deblurrer: a MIMO-UNet on a device at a precision, applied to whole images of any size.

Every list of outputs, here and in the network, ends with the deblurred image: MIMO-UNet's run
coarse to fine, [1/4, 1/2, full] (SCALES); XYDeblur's are [residual along x, along y, image], all
full size. A network says which by its ``output_scales`` and ``output_names``.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import fusion
from .arch import self_ensemble
from .device import (
    COMPILE_MIN_PIXELS,
    DTYPES,
    MIN_TILE,
    choose_tile,
    compile_model,
    cudnn_autotune,
    is_device_fault,
    is_oom,
    precision_name,
    release,
    resolve_device,
    resolve_precision,
)
from .errors import DeviceError, NotFiniteError
from .pixels import frames_to_tensor, from_tensor, join_channels, split_channels, to_frames, to_tensor, to_unit
from .settings import ProgressFn, RunSettings
from .tiling import SCALES, TileGrid, pad_to_multiple, round_down, round_up


@dataclass
class DeblurResult:
    """The deblurred image in the input's layout and dtype, plus the coarser outputs by scale."""

    image: np.ndarray
    # The network's other outputs, by name: MIMO-UNet's 1/2 and 1/4 scale images (keys 0.5, 0.25);
    # XYDeblur's two directional residuals ("residual-x", "residual-y"), mapped from [-1, 1] to
    # [0, 1] as the authors show them (mid-grey: no change).
    scales: dict[float | str, np.ndarray] = field(default_factory=dict)
    tiles: int = 1
    tile_size: int = 0
    fp32_fallbacks: int = 0


def upload(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (B,C,H,W) -> float32 in [0,1] on ``device``. Integer pixels travel as they
    are and are scaled there. The copy is plain and synchronous: the caller needs the result at
    once, so a pinned, non-blocking one would gain nothing, and pinning copies a stride-0 view
    (a gray image expanded to three channels) into a buffer with the same strides, which fails."""
    return to_unit(x.contiguous().to(device))


def _finite(outs: list[torch.Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(o).all() for o in outs]).all())  # one sync, not three


@dataclass(frozen=True)
class Settled:
    """A run's settings with every choice that does not depend on the input made (device,
    precision, backend, channels-last, ensemble), why the precision and backend are what they are,
    and the int8 network or the OpenVINO model when that is the choice. ``settings`` is what a
    worker or a resumed run is given: with a settled precision and backend nothing is measured
    again."""

    settings: RunSettings
    reason: str
    int8: nn.Module | None = None
    openvino: object | None = None  # an openvino.Model (openvino_backend), converted from the weights


def settle(model: nn.Module, settings: RunSettings, cache_dir: str | os.PathLike[str] | None = None) -> Settled:
    """Make the choices ``settings`` leave to "auto" that do not depend on the input, once.

    On a CPU, precision "auto" times the model in fp32 and in bf16 where the flags allow bf16,
    backend "auto" times torch and OpenVINO where OpenVINO is installed, and the fastest is used
    (calibrate.cpu_choice); where the user allowed it (mimo quantize --auto) int8 is timed against
    that too (OpenVINO's beside OpenVINO's float network, torch's beside torch's). The figures are
    cached beside the weights (``cache_dir``, $MIMO_CACHE_DIR), so a later run on this machine
    reads them. Precision "int8" loads (or calibrates and caches) the int8 network, torch's or
    OpenVINO's or, with backend "auto" where NNCF is installed, both, and times them once
    (calibrate.int8_backend); backend "openvino" loads (or converts and caches) the OpenVINO model.
    Tile and compile stay as they are: they depend on the input (Deblurrer.for_run).

    Raises DeviceError for a device, precision or backend that is not available here.
    """
    from . import openvino_backend as ovb

    device = resolve_device(settings.device)
    dtype = resolve_precision(settings.precision, device)
    channels_last = device.type in ("cpu", "cuda") if settings.channels_last is None else settings.channels_last
    ensemble = bool(settings.ensemble or getattr(model, "ensemble", False))
    reason = "auto: the device's rule" if settings.precision == "auto" else "as asked"
    int8: nn.Module | None = None
    if settings.backend == "openvino":
        ovb.check(model, device, dtype if settings.precision != "auto" else torch.float32)  # auto: fp32 at least
        if settings.compile is True:
            raise DeviceError("OpenVINO compiles the network itself", "drop --compile, or use --backend torch")
    # The backends a float run may choose from: OpenVINO only on the CPU, for the networks it
    # converts, and never beside --compile (a torch feature). int8 chooses below.
    backends: tuple[str, ...] = ("torch",)
    if settings.backend == "openvino":
        backends = ("openvino",)
    elif (
        settings.backend == "auto"
        and device.type == "cpu"
        and dtype in ovb.HINTS
        and settings.compile is not True
        and ovb.available()
        and ovb.supports(model)
    ):
        backends = ("torch", "openvino")
    from .cache import side_cache

    ov_folder = side_cache("openvino", cache_dir)
    made: list[tuple[object, str]] = []  # the OpenVINO model the run uses (float or int8), and how it was had

    def converted() -> object:  # the float OpenVINO model, loaded or converted only when needed
        if not made:
            made.append(ovb.converted_for(model, ov_folder))
        return made[0][0]

    def timed() -> nn.Module:  # a copy in the layout it will run in, made only to be timed
        copied = copy.deepcopy(model).eval()
        return copied.to(memory_format=torch.channels_last) if channels_last else copied  # type: ignore[call-overload]

    backend = backends[0]
    if device.type == "cpu" and dtype in ovb.HINTS:
        from .calibrate import cache_file, cpu_choice

        precisions: tuple[str, ...] = (precision_name(dtype),)
        if settings.precision == "auto" and dtype == torch.bfloat16:
            precisions = ("fp32", "bf16")  # the flags allow bf16: measured against fp32
        if "bf16" in precisions and "openvino" in backends and not ovb.has_bf16():
            # OpenVINO would run bf16 in fp32 here: torch's bf16 against its fp32, or OpenVINO's fp32.
            backends, precisions = (("torch",), precisions) if len(backends) > 1 else (backends, ("fp32",))
        if len(precisions) * len(backends) > 1:
            backend, dtype, reason = cpu_choice(
                timed(), channels_last, precisions, backends, converted, cache_file(cache_dir)
            )
        else:
            dtype = DTYPES[precisions[0]]
        if settings.precision == "auto" and settings.compile is not True:
            # int8 where the user allowed it (mimo quantize --auto): OpenVINO's beside OpenVINO's
            # float network, torch's beside torch's.
            from .calibrate import int8_faster
            from .quantize import allowed_int8, cache_folder

            if backend == "openvino" and (ov_int8 := ovb.allowed_int8(model, ov_folder)) is not None:
                faster, why = int8_faster(
                    timed(),
                    dtype,
                    channels_last,
                    lambda: ovb.OpenVINONet(ov_int8, torch.qint8),
                    cache_file(cache_dir),
                    converted(),
                    "OpenVINO int8",
                )
                if faster:
                    dtype, reason, made[:] = torch.qint8, why, [(ov_int8, "OpenVINO int8, calibrated before")]
            elif backend == "torch" and (allowed := allowed_int8(model, cache_folder(cache_dir))) is not None:
                faster, why = int8_faster(timed(), dtype, channels_last, lambda: allowed, cache_file(cache_dir))
                if faster:
                    dtype, int8, reason = torch.qint8, allowed, why
    elif dtype == torch.qint8:
        if settings.compile is True:
            raise DeviceError("int8 runs eagerly, not compiled", "drop --compile")
        from .quantize import cache_folder, quantized_for

        if settings.backend == "openvino":
            int8_backends: tuple[str, ...] = ("openvino",)
        elif settings.backend == "auto" and ovb.can_quantize() and ovb.supports(model):
            int8_backends = ("torch", "openvino")
        else:
            int8_backends = ("torch",)
        if "torch" in int8_backends:
            int8, reason = quantized_for(model, cache=cache_folder(cache_dir))
        if "openvino" in int8_backends:
            made.append(ovb.quantized_for(model, cache=ov_folder))
        backend = int8_backends[0]
        if len(int8_backends) > 1:
            from .calibrate import cache_file, int8_backend

            ov_int8 = made[0][0]
            assert int8 is not None
            backend, reason = int8_backend(
                model, False, int8, lambda: ovb.OpenVINONet(ov_int8, torch.qint8), cache_file(cache_dir)
            )
        if backend == "openvino":
            int8 = None
            reason = made[0][1] if len(int8_backends) == 1 else f"{reason}; {made[0][1]}"
    if dtype == torch.qint8:
        channels_last = False  # the quantized kernels take NCHW input fastest (measured)
    if backend == "openvino" and dtype != torch.qint8:
        converted()
        reason = f"{reason}; {made[0][1]}"
    settled = settings.replace(
        device=str(device),
        precision=precision_name(dtype),
        backend=backend,
        channels_last=channels_last,
        ensemble=ensemble,
    )
    return Settled(settled, reason, int8, made[0][0] if backend == "openvino" else None)


def build_deblurrer(
    model: nn.Module, settings: RunSettings, cache_dir: str | os.PathLike[str] | None = None
) -> Deblurrer:
    """The one way the commands, the API, the benchmarks, the web page and the Ray replicas make
    a Deblurrer: settle the settings (measuring where "auto" must), then build from the settled
    values. Settings already settled (a worker's, a resumed run's) are taken as they are."""
    s = settle(model, settings, cache_dir)
    return Deblurrer(model, s.settings, int8=s.int8, openvino=s.openvino, reason=s.reason)


class Deblurrer:
    """Run a MIMO-UNet on images of any size, as ``settings`` (a RunSettings, with ``changes``
    applied) say: device, precision, channels-last, tile, ensemble, compile.

    The model is copied, so the caller's stays as it was (its mode, device, layout and gradients).
    ``ensemble`` (or a model made with ensemble=True) averages the 8 flips/rotations (MIMO-UNet++).
    ``compile``: torch.compile the network (weights frozen into the graph on CPU, CUDA graphs on
    CUDA); it pays only over many calls of one shape (video), "auto" leaves the choice to
    ``for_run``. A compiler failure falls back to eager with a warning; an out-of-memory or a
    CUDA fault does not. After an out-of-memory the smaller tile is kept for the calls that follow.
    """

    def __init__(
        self,
        model: nn.Module,
        settings: RunSettings | None = None,
        *,
        int8: nn.Module | None = None,
        openvino: object | None = None,
        reason: str | None = None,
        **changes: object,
    ) -> None:
        config = settings or RunSettings()
        self.config = config.replace(**changes) if changes else config
        self.device = resolve_device(self.config.device)
        # Nothing is measured here: precision "auto" is the device's rule (resolve_precision).
        # build_deblurrer settles it by measurement first (settle), as every command does.
        self.dtype = resolve_precision(self.config.precision, self.device)
        channels_last = self.config.channels_last
        self.channels_last = self.device.type in ("cpu", "cuda") if channels_last is None else channels_last
        model = copy.deepcopy(model)
        self.ensemble = bool(self.config.ensemble or getattr(model, "ensemble", False))
        if self.ensemble:
            if not hasattr(model, "ensemble"):
                raise ValueError("the self-ensemble needs a MIMOUNet or XYDeblur, not a " + type(model).__name__)
            setattr(model, "ensemble", True)  # noqa: B010  (nn.Module types its attributes as tensors)
        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.precision_reason = reason or ("auto" if self.config.precision == "auto" else "as asked")
        self.float_model = self.model  # what a NaN/Inf output is redone with, in fp32
        # What the network's outputs are (the last is the image): their sizes as divisors of the
        # input's, and the names of those before the image; residuals (signed) or images.
        self.scales: tuple[int, ...] = tuple(getattr(model, "output_scales", SCALES))
        self.output_names: tuple[float | str, ...] = tuple(getattr(model, "output_names", (0.25, 0.5)))
        self.signed = bool(getattr(model, "signed_outputs", False))
        self.int8: nn.Module | None = int8
        # Backend "auto" is torch until settled (build_deblurrer); "openvino" runs through OpenVINO
        # (openvino_backend), its model for this precision loaded or made as settle does.
        self.backend = "openvino" if self.config.backend == "openvino" else "torch"
        if self.dtype == torch.qint8 and self.int8 is None and self.backend == "torch":
            s = settle(self.model, self.config.replace(precision="int8", backend="torch"))  # as settle loads it
            self.int8, self.precision_reason = s.int8, s.reason
        if self.dtype == torch.qint8:
            self.channels_last = False  # the quantized kernels take NCHW input fastest (measured)
        self.openvino: object | None = openvino  # OpenVINO's network for self.dtype (float or int8)
        if self.backend == "openvino" and self.openvino is None:
            s = settle(self.model, self.config)
            self.openvino, self.precision_reason = s.openvino, s.reason
        self._ov: dict[torch.dtype, Callable[[torch.Tensor], list[torch.Tensor]]] = {}
        tile = self.config.tile
        self._tile: int | None = None if tile == "auto" else int(tile)
        self.tile_overlap = self.config.tile_overlap
        self.fp32_fallbacks = 0
        self.compile: bool | str = self.config.compile
        if self.backend == "openvino":
            if self.compile is True:
                raise DeviceError("OpenVINO compiles the network itself", "drop --compile, or use --backend torch")
            self.compile = False
        self._tile_cap: int | None = None  # the tile an out-of-memory left us with
        self._compiled: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
        # fp32 and bf16 on the CPU run with oneDNN's fused convolutions (mimocli.fusion): one
        # fused copy per precision, made when first used (the fp32 redo of a NaN output included).
        self._fusable = self.device.type == "cpu" and fusion.available() and fusion.fusable(self.model)
        self._fused: dict[torch.dtype, nn.Module] = {}
        if self.compile is True:
            self._compiled = compile_model(self.model, self.device)

    def decide_compile(self, frames: int | None, height: int, width: int) -> bool:
        """Settle compile="auto" for a run of ``frames`` images of one size: compile when the
        pixels to process repay the compile time. Returns whether the network is compiled."""
        if self.compile == "auto":
            budget = COMPILE_MIN_PIXELS.get(self.device.type)
            self.compile = bool(budget and frames and frames * height * width >= budget)
            if self.compile:
                self._compiled = compile_model(self.model, self.device)
        return self.compiled

    def for_run(
        self, frames: int | None, height: int, width: int, batch: int = 1, tile: int | None = None
    ) -> Deblurrer:
        """A Deblurrer settled for one run of ``frames`` images of height x width in batches of
        ``batch`` (a video): the tile fixed (``tile`` when given, as a resumed run or a worker is
        told it; else auto resolved once, for that batch; 0 when whole frames fit), compile
        decided and, when on, done on a first batch of black frames, so that a compiler failure
        falls back now, before the run records its settings. This Deblurrer is not changed; the
        two share the model."""
        run = copy.copy(self)
        if tile is not None:
            run._tile = tile
        elif run._tile is None:
            hp, wp = round_up(height), round_up(width)
            chosen = choose_tile(run.device, run.dtype, hp, wp, batch)
            run._tile = 0 if chosen >= max(hp, wp) else chosen
        if run.decide_compile(frames, height, width):
            run.run_tensor(torch.zeros(batch, 3, height, width, dtype=torch.uint8))
        return run

    @property
    def tile(self) -> int | None:
        """The tile side it runs at (0: whole images; None: "auto", fitted to each image's size
        and the free memory). Fixed once for a run by for_run, never by assignment."""
        return self._tile

    @property
    def compiled(self) -> bool:
        """True while the compiled network is in use (False after a fallback to eager)."""
        return self._compiled is not None

    @property
    def settled(self) -> RunSettings:
        """The settings this Deblurrer runs with, every choice made that it has made: what a
        worker or a resumed run is given to run the same way (tile 0 while still "auto")."""
        return self.config.replace(
            device=str(self.device),
            precision=precision_name(self.dtype),
            backend=self.backend,
            channels_last=self.channels_last,
            ensemble=self.ensemble,
            tile=self.tile or 0,
            compile=self.compiled if self.compile != "auto" else "auto",
        )

    def report(self) -> dict[str, object]:
        """What ``--json`` reports: the device, precision (and why), channels-last, compile,
        ensemble, tile and batch that run."""
        return {**self.settled.report(), "precision_reason": self.precision_reason}

    @property
    def settings(self) -> dict[str, object]:
        """What the output's numbers depend on besides the model and the input."""
        return {
            "device": self.device.type,
            "precision": precision_name(self.dtype),
            "backend": self.backend,
            "channels_last": self.channels_last,
            "compile": "auto" if self.compile == "auto" else self.compiled,  # as it ran: False after a fallback
            "ensemble": self.ensemble,
        }

    # -- tensors ------------------------------------------------------------------------------
    @contextmanager
    def _autocast(self, dtype: torch.dtype) -> Iterator[None]:
        if dtype in (torch.float32, torch.qint8):
            yield
        else:
            with torch.autocast(self.device.type, dtype=dtype):
                yield

    def _net(self, x: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        if self.backend == "openvino":  # NCHW, as OpenVINO takes it
            net = self._ov.get(dtype)
            if net is None:
                from . import openvino_backend as ovb

                network = self.openvino
                if self.dtype == torch.qint8 and dtype != torch.qint8:  # int8's fp32 redo: the float network
                    network = ovb.converted_for(self.model)[0]
                net = self._ov[dtype] = ovb.OpenVINONet(network, dtype)
            return self_ensemble(net, x) if self.ensemble else net(x.contiguous())
        # Video frames arrive as NHWC views: without channels-last they are made truly NCHW, or
        # the convolutions would follow the input's layout and the switch would change nothing.
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self._compiled is not None:
            try:
                with self._autocast(dtype):
                    if self.device.type == "cuda":
                        torch.compiler.cudagraph_mark_step_begin()
                    outs = [o.float() for o in self._compiled(x)]
                # CUDA graph outputs live in memory that the next replay overwrites.
                return [o.clone() for o in outs] if self.device.type == "cuda" else outs
            except Exception as e:
                if is_oom(e) or is_device_fault(e):
                    raise
                self._compiled = None
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); running eager", RuntimeWarning, 3)
        if dtype == torch.qint8 and self.int8 is not None:
            return _int8_forward(self.int8, x, self.ensemble)
        if self._fusable and dtype in fusion.DTYPES:
            net = self._fused.get(dtype)
            if net is None:
                net = self._fused[dtype] = fusion.fuse(self.model, dtype)
            return [o.float() for o in net(x.to(dtype))]
        with self._autocast(dtype):
            return [o.float() for o in self.model(x)]

    def _infer(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B,3,h,w) on the device, h,w multiples of 4 -> 3 float32 outputs, coarse to fine."""
        outs = self._net(x, self.dtype)
        if _finite(outs):
            return outs
        if self.dtype != torch.float32:
            self.fp32_fallbacks += 1
            warnings.warn(
                f"{precision_name(self.dtype)} output had NaN/Inf values; redone in fp32", RuntimeWarning, stacklevel=3
            )
            outs = self._net(x, torch.float32)
            if _finite(outs):
                return outs
        # A black or garbage image written as a success would be a lie: fail instead.
        raise NotFiniteError(
            "the network's output holds NaN/Inf values, in fp32 too",
            "the weights are damaged or are not MIMO-UNet weights: download or export them again",
        )

    def _first_tile(self, hp: int, wp: int, batch: int) -> int:
        tile = choose_tile(self.device, self.dtype, hp, wp, batch) if self.tile is None else self.tile or max(hp, wp)
        return tile if self._tile_cap is None else min(tile, self._tile_cap)

    def run_tensor(
        self, x: torch.Tensor, on_progress: ProgressFn | None = None, keep_on_device: bool = False
    ) -> tuple[list[torch.Tensor], int, int]:
        """x: (B,1 or 3,H,W) float in [0,1] (or uint8 0..255, int32 0..65535) -> ([1/4, 1/2,
        full] float32 tensors with 3 channels, unclamped, cropped to ceil(H/s) x ceil(W/s)),
        number of tiles, tile side used (0: untiled). The outputs are on the CPU unless
        ``keep_on_device`` and untiled.

        Retries with tiles half the size when the device runs out of memory, and keeps that
        size for later calls. Raises DeviceError when even the smallest tile does not fit.
        """
        h, w = x.shape[-2:]
        hp, wp = round_up(h), round_up(w)
        tile = self._first_tile(hp, wp, x.shape[0])
        while True:
            error = self._attempt(x, tile, on_progress)
            if not isinstance(error, str):
                outs, n = error
                break
            # Outside the except block: the failed attempt's tensors are gone, so the cache frees.
            release(self.device)
            smaller = round_down(min(tile, max(hp, wp)) // 2)
            if smaller < MIN_TILE:
                raise DeviceError(
                    f"out of memory on {self.device} even with {tile}px tiles ({error})",
                    "free memory on the device, or use --device cpu",
                )
            warnings.warn(
                f"out of memory on {self.device} with {tile}px tiles; retrying with {smaller}px",
                RuntimeWarning,
                stacklevel=2,
            )
            tile = self._tile_cap = smaller
        crops = [o[..., : -(-h // s), : -(-w // s)] for o, s in zip(outs, self.scales, strict=True)]
        if not keep_on_device:
            crops = [o.cpu() for o in crops]
        return crops, n, (0 if n == 1 else tile)

    def _attempt(
        self, x: torch.Tensor, tile: int, on_progress: ProgressFn | None
    ) -> tuple[list[torch.Tensor], int] | str:
        """One pass at ``tile``; an out-of-memory comes back as its message."""
        try:
            with torch.inference_mode(), cudnn_autotune(self.device):
                xp = upload(x, self.device)
                if xp.shape[1] == 1:
                    xp = xp.expand(-1, 3, -1, -1)
                return self._run_tiles(pad_to_multiple(xp), tile, on_progress)
        except Exception as e:
            if not is_oom(e):
                raise
            return str(e).splitlines()[0] if str(e) else type(e).__name__

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
        acc = [torch.zeros(xp.shape[0], 3, hp // s, wp // s) for s in self.scales]
        weight = [torch.zeros(1, 1, hp // s, wp // s) for s in self.scales]
        for i, t in enumerate(grid):
            patch = xp[..., t.y : t.y + t.h, t.x : t.x + t.w]
            for o, a, wsum, s in zip(self._infer(patch), acc, weight, self.scales, strict=True):
                win = grid.window(t, s)
                ys, xs = slice(t.y // s, (t.y + t.h) // s), slice(t.x // s, (t.x + t.w) // s)
                a[..., ys, xs] += o.cpu() * win
                wsum[..., ys, xs] += win
            if on_progress:
                on_progress(i + 1, total)
        return [a / wsum for a, wsum in zip(acc, weight, strict=True)], total

    # -- arrays -------------------------------------------------------------------------------
    def deblur_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        """batch: (B,H,W,3) uint8/uint16 video frames of one size -> [1/4, 1/2, full] arrays of the
        same dtype, (B,ceil(H/s),ceil(W/s),3). One forward pass per tile for the whole batch."""
        outs, _tiles, _tile = self.run_tensor(frames_to_tensor(batch), keep_on_device=True)
        # Quantise on the device, so that only the 8- or 16-bit result crosses back to the host.
        return [to_frames(o, batch.dtype) for o in outs]

    def __call__(self, image: np.ndarray, on_progress: ProgressFn | None = None) -> DeblurResult:
        """image: (H,W), (H,W,1..4) uint8/uint16/float in [0,1] -> DeblurResult in the same layout.

        Grayscale goes through the network as three equal channels and comes back as one; an
        alpha channel (2 or 4 channels) is passed through untouched. The coarse outputs come
        back at 1/2 and 1/4 size with the alpha channel subsampled to match.
        """
        color, alpha = split_channels(image)
        gray = color.shape[2] == 1
        fallbacks = self.fp32_fallbacks
        outs, tiles, tile_size = self.run_tensor(to_tensor(color), on_progress)
        arrays = []
        for i, (o, s) in enumerate(zip(outs, self.scales, strict=True)):
            if gray:
                o = o.mean(dim=1, keepdim=True)
            if self.signed and i < len(outs) - 1:
                o = (o + 1) / 2  # a residual in [-1, 1], shown as the authors show it
            a = None if alpha is None else alpha[::s, ::s]
            arrays.append(join_channels(from_tensor(o, image.dtype), a, image.ndim == 2))
        return DeblurResult(
            image=arrays[-1],
            scales=dict(zip(self.output_names, arrays[:-1], strict=True)),
            tiles=tiles,
            tile_size=tile_size,
            fp32_fallbacks=self.fp32_fallbacks - fallbacks,
        )


def _int8_forward(net: nn.Module, x: torch.Tensor, ensemble: bool) -> list[torch.Tensor]:
    """The quantized network (traced without the ensemble, which then goes around it)."""
    with warnings.catch_warnings():
        # Quantized torch.cat requantizes inputs of different ranges (measured: 44 dB from fp32).
        warnings.filterwarnings("ignore", message="All inputs of this cat operator")
        outs = self_ensemble(net, x) if ensemble else net(x)
    return [o.float() for o in outs]
