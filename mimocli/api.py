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
from .errors import OutputError
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
    **changes: Any,
) -> Deblurrer:
    """The Deblurrer ``deblur`` uses for these settings (a RunSettings, or its fields by name:
    device, precision, tile, ensemble...), loaded once per process and reused.

    Raises WeightsError (or a subclass) when the weights cannot be had.
    """
    run = (settings or RunSettings()).replace(**changes)
    key = (variant, None if weights is None else str(weights), run)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build_deblurrer(load_weights(variant, "cpu", weights).model, run)
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
    - a PIL image: a PIL image of the same mode and size (L, LA, RGB, RGBA, I;16; other modes
      come back as RGB), with its ICC profile, EXIF and DPI.
    - a numpy array (H,W) or (H,W,C), C in 1..4, uint8/uint16/float in [0,1]: the same shape and
      dtype; an alpha channel passes through untouched. Read-only arrays are fine.
    - a torch tensor (C,H,W) or (B,C,H,W), C 1 or 3, float in [0,1]: the same shape, dtype and
      device, clamped to [0,1].

    ``variant``/``weights``: as for `mimo deblur` (default: MIMO-UNet+, or the bundled model where
    the registry allows it); ``device``: "auto", "cpu", "cuda", "mps"; ``settings``: a whole
    RunSettings instead of device, precision, tile and ensemble. The model is loaded once per
    setting and kept. Raises ImageError for an unreadable input, TypeError for any other kind.
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


def _deblur_array(d: Deblurrer, image: np.ndarray) -> np.ndarray:
    if image.dtype.kind == "f" and image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1):
        raise ValueError("float images must hold values in [0, 1]")
    squeeze = image.ndim == 3 and image.shape[2] == 1
    out = d(image[:, :, 0] if squeeze else image).image
    return out[:, :, None] if squeeze else out


def _deblur_tensor(d: Deblurrer, image: torch.Tensor) -> torch.Tensor:
    if image.ndim not in (3, 4) or image.shape[-3] not in (1, 3):
        raise ValueError(f"expected a (C,H,W) or (B,C,H,W) tensor with C 1 or 3, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got {image.dtype}")
    x = image if image.ndim == 4 else image[None]
    gray = x.shape[1] == 1
    with torch.inference_mode():
        outs, _tiles, _tile = d.run_tensor(x.detach().float())
    y = outs[-1].clamp(0, 1)
    if gray:
        y = y.mean(dim=1, keepdim=True)
    y = y.to(device=image.device, dtype=image.dtype)
    return y if image.ndim == 4 else y[0]


_PIL_KEEP = ("icc_profile", "exif", "dpi")


def _deblur_pil(d: Deblurrer, image: Image.Image) -> Image.Image:
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.asarray(image).astype(np.uint16)
    elif mode in ("L", "LA", "RGB", "RGBA"):
        pixels = np.asarray(image)
    else:
        mode = "RGBA" if "transparency" in image.info or mode in ("PA", "RGBa", "La") else "RGB"
        pixels = np.asarray(image.convert(mode))
    out = d(pixels).image
    result = Image.fromarray(out)  # uint16 -> I;16
    if result.mode != mode and mode not in ("I;16", "I;16L", "I;16B", "I;16N"):
        result = result.convert(mode)
    result.info.update({k: image.info[k] for k in _PIL_KEEP if k in image.info})
    return result


def _is_pil(image: object) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with mimocli
        return False
    return isinstance(image, Image.Image)
