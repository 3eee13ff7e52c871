"""mimocli: remove motion blur from photos and videos with MIMO-UNet (Cho et al., ICCV 2021)."""

from .arch import MIMOUNet
from .engine import Deblurrer, DeblurResult, resolve_device, resolve_precision
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
from .images import ImageFile, read_image, write_image
from .registry import VARIANTS, Variant, detect_variant, get_variant
from .video import VideoOptions, VideoSummary, deblur_video
from .weights import (
    LoadedWeights,
    download_weights,
    import_weights,
    load_model,
    load_weights,
    read_state_dict,
    resolve_weights,
)

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
    "Variant",
    "VideoError",
    "VideoOptions",
    "VideoSummary",
    "WeightsError",
    "__version__",
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
