"""`mimocli.deblur(image)`: one call from a path, a PIL image, a numpy array or a torch tensor
to the same kind, deblurred, as `rembg.remove` does for backgrounds. Never prints."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .engine import Deblurrer, build_deblurrer
from .errors import ImageError, OutputError
from .paths import SUFFIX, Job
from .photos import PhotoOptions, deblur_image
from .settings import RunSettings
from .weights import load_weights

if TYPE_CHECKING:
    from PIL import Image

_CACHE: dict[tuple[Any, ...], Deblurrer] = {}  # one loaded model per setting, kept for the next call
_LOCK = threading.Lock()


def deblurrer(
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    settings: RunSettings | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    **changes: Any,
) -> Deblurrer:
    """The Deblurrer ``deblur`` uses for these settings (a RunSettings, or its fields by name:
    device, precision, tile, ensemble...), loaded once per process and reused. ``cache_dir``: the
    weights cache (and the measurements'), as `--cache-dir` sets it; default as `mimo deblur`'s.

    Raises WeightsError (or a subclass) when the weights cannot be had.
    """
    run = (settings or RunSettings()).replace(**changes)
    cache = None if cache_dir is None else str(cache_dir)
    key = (variant, None if weights is None else str(weights), run, cache)
    with _LOCK:
        if key not in _CACHE:
            model = load_weights(variant, "cpu", weights, cache).model
            _CACHE[key] = build_deblurrer(model, run, cache)
        return _CACHE[key]


def deblur(
    image: Any,
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str = "auto",
    ensemble: bool = False,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    settings: RunSettings | None = None,
) -> Any:
    """Deblur ``image`` and return the same kind of thing:

    - a path (str or PathLike): the result is written beside it as NAME_deblurred.EXT (or to
      ``output``), atomically, with its EXIF and ICC profile; returns the output's Path. Raises
      OutputError when that file exists (unless ``overwrite``) or is the input.
    - a PIL image: a PIL image of the same mode and size (L, LA, RGB, RGBA, I;16, F with values in
      [0,1], I by the integer rules; P, 1 and others come back as RGB, or RGBA where transparent),
      with its ICC profile, EXIF and DPI.
    - a numpy array (H,W) or (H,W,C), C in 1..4: uint8 and uint16 as 8- and 16-bit; any other
      integer dtype by its values (0..255 as 8-bit, 0..65535 as 16-bit); floats of any width in
      [0,1]. The result has the same shape and dtype (integers in the range they came in); an
      alpha channel passes through untouched. Read-only arrays are fine.
    - a torch tensor (C,H,W) or (B,C,H,W), C 1 or 3, by the same rules: the same shape, dtype and
      device.

    ``variant``/``weights``: as for `mimo deblur` (default: MIMO-UNet+, or the bundled model where
    the registry allows it); ``device``: "auto", "cpu", "cuda", "mps"; ``settings``: a whole
    RunSettings instead of device, precision, tile and ensemble. The model is loaded once per
    setting and kept. Raises ImageError for an unreadable input or pixels outside those rules (an
    empty image, NaN, negative or too large integers, floats outside [0,1]), naming the range;
    TypeError for any other kind.
    """
    run = settings or RunSettings(device=device, precision=precision, tile=tile, ensemble=ensemble)
    d = deblurrer(variant, weights, run)
    if isinstance(image, (str, os.PathLike)):
        return _deblur_file(d, Path(image), output, overwrite)
    if isinstance(image, np.ndarray):
        return _deblur_array(d, image)
    if isinstance(image, torch.Tensor):
        return _deblur_tensor(d, image)
    if _is_pil(image):
        return _deblur_pil(d, image)
    raise TypeError(f"cannot deblur a {type(image).__name__}: pass a path, a PIL image, a numpy array or a tensor")


def _deblur_file(d: Deblurrer, src: Path, output: str | os.PathLike[str] | None, overwrite: bool) -> Path:
    dest = Path(output) if output is not None else src.with_name(f"{src.stem}{SUFFIX}{src.suffix}")
    if dest.exists() and dest.resolve() == src.resolve():
        raise OutputError(f"{dest}: is the input; refusing to write over it", "pass another output")
    job = Job(src, dest, {})
    try:
        deblur_image(job, d, PhotoOptions(overwrite=overwrite))
    except OutputError as e:
        if "already exists" in e.message:
            raise OutputError(f"{dest}: already exists", "pass overwrite=True to replace it") from None
        raise
    return dest


def _checked(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``image`` as the Deblurrer takes it: uint8 or uint16 as they are; another integer dtype by
    its values (0..255 as 8-bit, 0..65535 as 16-bit); floats (any width) in [0, 1] as float32.
    Raises ImageError for an empty image, NaN/Inf, negative or too large integers, floats outside
    [0, 1], and dtypes that hold no pixels (bool, complex, object)."""
    if image.size == 0 or 0 in image.shape[:2]:
        raise ImageError(f"the {what} is empty (shape {image.shape})", "pass an image of at least 1x1 pixels")
    if image.dtype in (np.uint8, np.uint16):
        return image
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 65535:
            raise ImageError(
                f"the {what}'s {image.dtype} values run from {lo} to {hi}",
                "integer pixels must be 0..255 (8-bit) or 0..65535 (16-bit); scale them first",
            )
        return image.astype(np.uint8 if hi <= 255 else np.uint16)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError(f"the {what} holds NaN or infinite values", "replace them before deblurring")
        lo_f, hi_f = float(image.min()), float(image.max())
        if lo_f < 0 or hi_f > 1:
            raise ImageError(
                f"the {what}'s float values run from {lo_f:g} to {hi_f:g}", "float pixels must be in [0, 1]"
            )
        return image.astype(np.float32, copy=False)
    raise ImageError(f"the {what} is {image.dtype}, which holds no pixels", "pass integers or floats in [0, 1]")


def _deblur_array(d: Deblurrer, image: np.ndarray) -> np.ndarray:
    pixels = _checked(image)
    squeeze = pixels.ndim == 3 and pixels.shape[2] == 1
    out = d(pixels[:, :, 0] if squeeze else pixels).image
    out = out[:, :, None] if squeeze else out
    return out.astype(image.dtype, copy=False)  # integers in the range they came in, floats at their width


def _deblur_tensor(d: Deblurrer, image: torch.Tensor) -> torch.Tensor:
    if image.ndim not in (3, 4) or image.shape[-3] not in (1, 3):
        raise ValueError(f"expected a (C,H,W) or (B,C,H,W) tensor with C 1 or 3, got shape {tuple(image.shape)}")
    # The rules of arrays: integers by their values, floats in [0, 1]; checked on the host copy.
    host = image.detach().cpu()
    pixels = _checked(host.numpy() if host.dtype != torch.bfloat16 else host.float().numpy(), "tensor")
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    x = x if image.ndim == 4 else x[None]
    gray = x.shape[1] == 1
    with torch.inference_mode():
        outs, _tiles, _tile = d.run_tensor(
            x if x.is_floating_point() else x.to(torch.int32) if x.dtype != torch.uint8 else x
        )
    y = outs[-1].clamp(0, 1)
    if gray:
        y = y.mean(dim=1, keepdim=True)
    if not image.is_floating_point():  # back to the integer range the values came in
        peak = 255 if pixels.dtype == np.uint8 else 65535
        y = (y * peak).round()
    y = y.to(device=image.device, dtype=image.dtype)
    return y if image.ndim == 4 else y[0]


_PIL_KEEP = ("icc_profile", "exif", "dpi")


def _deblur_pil(d: Deblurrer, image: Image.Image) -> Image.Image:
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.asarray(image).astype(np.uint16)
    elif mode in ("L", "LA", "RGB", "RGBA", "F", "I"):
        pixels = np.asarray(image)  # F: floats in [0, 1], I: 32-bit integers, both by the array rules
    else:
        mode = "RGBA" if "transparency" in image.info or mode in ("PA", "RGBa", "La") else "RGB"
        pixels = np.asarray(image.convert(mode))
    out = d(_checked(pixels)).image
    if mode == "F":
        result = Image.fromarray(out.astype(np.float32), mode="F")
    elif mode == "I":
        result = Image.fromarray(out.astype(np.int32), mode="I")
    else:
        result = Image.fromarray(out)  # uint16 -> I;16
    if result.mode != mode and mode not in ("I;16", "I;16L", "I;16B", "I;16N", "F", "I"):
        result = result.convert(mode)
    result.info.update({k: image.info[k] for k in _PIL_KEEP if k in image.info})
    return result


def _is_pil(image: object) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with mimocli
        return False
    return isinstance(image, Image.Image)
