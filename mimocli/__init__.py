"""mimocli: remove motion blur from photos and videos with MIMO-UNet (Cho et al., ICCV 2021)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    DeviceError,
    DownloadError,
    ImageError,
    IntegrityError,
    MimoError,
    OfflineError,
    OutputError,
    VideoError,
    WeightsError,
)
from .registry import VARIANTS, Variant, detect_variant, get_variant
from .settings import RunSettings

if TYPE_CHECKING:
    from .api import deblur
    from .arch import MIMOUNet
    from .checkpoints import read_state_dict
    from .device import resolve_device, resolve_precision
    from .engine import Deblurrer, DeblurResult, build_deblurrer
    from .images import ImageFile, read_image, write_image
    from .photos import PhotoOptions, PhotoResult, deblur_image
    from .video import VideoOptions, VideoSummary, deblur_video
    from .weights import LoadedWeights, download_weights, import_weights, load_model, load_weights, resolve_weights

# The rest of the API is imported on first use, so that `import mimocli` (and `mimo --help`)
# does not pay for torch, PyAV and OpenCV.
_LAZY = {
    "deblur": "api",
    "MIMOUNet": "arch",
    "Deblurrer": "engine",
    "DeblurResult": "engine",
    "build_deblurrer": "engine",
    "resolve_device": "device",
    "resolve_precision": "device",
    "deblur_image": "photos",
    "PhotoOptions": "photos",
    "PhotoResult": "photos",
    "ImageFile": "images",
    "read_image": "images",
    "write_image": "images",
    "VideoOptions": "video",
    "VideoSummary": "video",
    "deblur_video": "video",
    "LoadedWeights": "weights",
    "download_weights": "weights",
    "import_weights": "weights",
    "load_model": "weights",
    "load_weights": "weights",
    "read_state_dict": "checkpoints",
    "resolve_weights": "weights",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mimocli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "DeblurResult",
    "Deblurrer",
    "DeviceError",
    "DownloadError",
    "ImageError",
    "ImageFile",
    "IntegrityError",
    "LoadedWeights",
    "MIMOUNet",
    "MimoError",
    "OfflineError",
    "OutputError",
    "PhotoOptions",
    "PhotoResult",
    "RunSettings",
    "Variant",
    "VideoError",
    "VideoOptions",
    "VideoSummary",
    "WeightsError",
    "__version__",
    "build_deblurrer",
    "deblur",
    "deblur_image",
    "deblur_video",
    "detect_variant",
    "download_weights",
    "get_variant",
    "import_weights",
    "load_model",
    "load_weights",
    "read_image",
    "read_state_dict",
    "resolve_device",
    "resolve_precision",
    "resolve_weights",
    "write_image",
]
