"""OpenVINO as a second backend on the CPU (the ``openvino`` extra): fp32, bf16 and int8.

Measured side by side (benchmarks/runtimes.py, 2-core Xeon with AMX, MIMO-UNet at 1280x720),
OpenVINO runs the same network faster than oneDNN through PyTorch can be made to: it keeps one
blocked layout from the first layer to the last and fuses every bias, ReLU and residual add into
its convolutions. So where it is installed, the network is converted from our own model (the
float weights, as loaded; nothing downloaded), kept in the weights cache as OpenVINO IR keyed by
the weights' sha256, OpenVINO's and torch's versions and RECIPE, and run by it wherever the run's
one measurement (mimocli.calibrate.cpu_choice, int8_backend) finds it faster than torch. Its int8
network is NNCF's post-training quantization of that IR (quantized_for). The torch path stays the
default where it is not installed, on GPUs and for other networks.

The IR holds the weights in fp32 (not OpenVINO's default fp16 compression), with the input's
batch, height and width left open; OpenVINONet compiles it once per input shape.
MIMO_OPENVINO=0 makes mimocli act as if it were not installed (the tests pin it, and let it
through where they test it).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import write_bytes_atomic
from .checkpoints import state_sha256
from .errors import DeviceError, NotFiniteError

RECIPE = "ov-convert-fp32-1"  # changes when the conversion does: older files are stale
ENV = "MIMO_OPENVINO"
HINTS = {torch.float32: "f32", torch.bfloat16: "bf16"}  # OpenVINO's inference precision per dtype
# int8: the quantized IR (quantized_for) runs its convolutions in int8 and leaves the rest to the
# plugin's default precision (bf16 where the CPU has it): measured on MIMO-UNet at 1280x720, 0.70 s
# against 0.79 s with the rest held in f32, at the same 45.9 dB from fp32 (the MIXED preset).
PRECISIONS = (*HINTS, torch.qint8)
INT8_RECIPE = "nncf-minmax-whole-1"
WHOLE_MAX_SIDE = 1024  # a calibration image seen whole is first made at most this wide and high
INSTALL = 'pip install "mimocli[openvino]"'


def available() -> bool:
    """Whether OpenVINO is installed and not turned off (MIMO_OPENVINO=0)."""
    if os.environ.get(ENV, "").strip() == "0":
        return False
    return importlib.util.find_spec("openvino") is not None


def supports(model: nn.Module) -> bool:
    """Whether ``model`` is a network this backend converts (MIMO-UNet and XYDeblur) and its
    weights are finite (see finite)."""
    from .arch import MIMOUNet
    from .xydeblur import XYDeblur

    return isinstance(model, (MIMOUNet, XYDeblur)) and finite(model)


def finite(model: nn.Module) -> bool:
    """Whether every weight is finite. OpenVINO fuses each ReLU into its convolution, and that
    ReLU turns NaN into 0 (torch's keeps it), so damaged weights would give a plausible image
    where the engine must fail (NotFiniteError): such weights run on torch, which reports them."""
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())


def can_quantize() -> bool:
    """Whether NNCF, which quantizes for OpenVINO (int8), is installed beside it."""
    return available() and importlib.util.find_spec("nncf") is not None


def version() -> str:
    import openvino

    return str(openvino.get_version())


def has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively on this processor."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check(model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse --backend openvino where it cannot run, in one line with the remedy."""
    if device.type != "cpu":
        raise DeviceError(f"the OpenVINO backend runs on the CPU, not on {device.type}", "use --device cpu")
    if not available():
        raise DeviceError("the OpenVINO backend is not installed", f"{INSTALL}, or use --backend torch")
    if not finite(model):
        raise NotFiniteError(
            "the weights hold NaN/Inf values",
            "the weights are damaged or are not MIMO-UNet weights: download or export them again",
        )
    if not supports(model):
        kind = type(model).__name__
        raise DeviceError(f"the OpenVINO backend runs MIMO-UNet and XYDeblur, not {kind}", "use --backend torch")
    if dtype == torch.qint8 and not can_quantize():
        raise DeviceError("OpenVINO's int8 needs NNCF, which is not installed", f"{INSTALL}, or use --backend torch")
    if dtype not in PRECISIONS:
        name = {torch.float16: "fp16"}.get(dtype, str(dtype))
        raise DeviceError(f"the OpenVINO backend runs fp32, bf16 and int8, not {name}", "use --backend torch")
    if dtype == torch.bfloat16 and not has_bf16():
        raise DeviceError(
            "OpenVINO runs bf16 only on a CPU that has it natively (AVX512-BF16 or AMX), not this one",
            "use --precision fp32, or --backend torch",
        )


def cache_key(float_sha256: str) -> str:
    return hashlib.sha256(f"{float_sha256}|{version()}|{torch.__version__}|{RECIPE}".encode()).hexdigest()[:16]


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Beside the weights (cache.side_cache), as the int8 models are."""
    from .cache import side_cache

    return side_cache("openvino", cache_dir)


def convert(model: nn.Module) -> Any:
    """``model`` (a MIMOUNet or XYDeblur, without its ensemble) as an openvino.Model whose input
    (1..N, 3, H, W) float32 in [0, 1] may be of any size, its outputs those of the network."""
    import openvino as ov

    net = copy.deepcopy(model).float().eval().cpu()
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    setattr(net, "ensemble", False)  # noqa: B010  (the ensemble goes around the converted network)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values taken as constants
        return ov.convert_model(net, example_input=torch.rand(1, 3, 64, 64), input=[ov.PartialShape([-1, 3, -1, -1])])


def save(
    converted: Any, folder: Path, key: str, float_sha256: str, recipe: str = RECIPE, **extra: object
) -> None:
    """The IR (``key``.xml and .bin, weights as they are: fp32, or int8 where quantized) and its
    record (.json, written last, with both files' sha256 and ``extra``), each file written
    atomically."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".convert-") as tmp:
        ov.save_model(converted, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        xml, weights = (Path(tmp) / "model.xml").read_bytes(), (Path(tmp) / "model.bin").read_bytes()
    write_bytes_atomic(folder / f"{key}.bin", weights)
    write_bytes_atomic(folder / f"{key}.xml", xml)
    record = {
        "xml_sha256": hashlib.sha256(xml).hexdigest(),
        "bin_sha256": hashlib.sha256(weights).hexdigest(),
        "float_sha256": float_sha256,
        "openvino": version(),
        "torch": torch.__version__,
        "recipe": recipe,
        **extra,
    }
    write_bytes_atomic(folder / f"{key}.json", (json.dumps(record, indent=1) + "\n").encode())


def load(folder: Path, key: str, float_sha256: str, recipe: str = RECIPE) -> Any | None:
    """The IR stored under ``key`` for these float weights, or None when there is none, or it is
    damaged (sha256) or stale (other weights, OpenVINO, torch or recipe)."""
    import openvino as ov

    try:
        record = json.loads((folder / f"{key}.json").read_text())
        xml, weights = (folder / f"{key}.xml").read_bytes(), (folder / f"{key}.bin").read_bytes()
    except (OSError, ValueError):
        return None
    expected = {"float_sha256": float_sha256, "openvino": version(), "torch": torch.__version__, "recipe": recipe}
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    if hashlib.sha256(xml).hexdigest() != record.get("xml_sha256"):
        return None
    if hashlib.sha256(weights).hexdigest() != record.get("bin_sha256"):
        return None
    try:
        return ov.Core().read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))
    except (RuntimeError, UnicodeDecodeError):
        return None


def converted_for(model: nn.Module, cache: Path | None = None, sha: str | None = None) -> tuple[Any, str]:
    """The OpenVINO model for ``model``'s weights (``sha``: their state_sha256, where the caller
    has it): from the cache, or converted now and cached (best effort: a read-only cache converts
    again next time); and a line that says which."""
    sha = sha or state_sha256(model)
    folder = cache or cache_folder()
    key = cache_key(sha)
    if (found := load(folder, key, sha)) is not None:
        return found, f"OpenVINO, converted before ({folder / key}.xml)"
    net = convert(model)
    with contextlib.suppress(OSError):
        save(net, folder, key, sha)
    return net, "OpenVINO, converted now"


class OpenVINONet:
    """A converted network compiled for the CPU at one precision (``dtype``: fp32 or bf16; qint8
    for a quantized one), called like the torch network: (B,3,H,W) float tensor -> its outputs as
    float32 tensors. Compiled with torch's thread count at the time (--threads), once per input
    shape (the SHAPES most recent are kept): a network compiled for one shape ran 4-8% faster than
    one compiled for any (MIMO-UNet, bf16, 640x360: 0.234 s against 0.245-0.253 s) with the same
    outputs, and compiling takes 0.2-0.4 s, which a video's frames and a photo's tiles share.
    Every input of a shape goes through the network compiled for it, whatever came before, so a
    resumed video or a Ray worker computes each frame as a whole run does. Calls from several
    threads take turns."""

    SHAPES = 4

    def __init__(self, converted: Any, dtype: torch.dtype, threads: int | None = None) -> None:
        if dtype not in PRECISIONS:
            raise ValueError(f"OpenVINO runs fp32, bf16 or int8 here, not {dtype}")
        self.converted = converted
        self.config: dict[str, object] = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        if dtype in HINTS:
            self.config["INFERENCE_PRECISION_HINT"] = HINTS[dtype]
        self._compiled: dict[tuple[int, ...], tuple[Any, Any]] = {}  # shape -> (compiled model, request)
        self._lock = threading.Lock()

    def _for(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        found = self._compiled.pop(shape, None)
        if found is None:
            import openvino as ov

            model = self.converted.clone()
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
            compiled = ov.Core().compile_model(model, "CPU", self.config)
            found = (compiled, compiled.create_infer_request())
            while len(self._compiled) >= self.SHAPES:
                self._compiled.pop(next(iter(self._compiled)))  # the least recently used
        self._compiled[shape] = found
        return found

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        data = x.detach().float().cpu().contiguous().numpy()
        with self._lock:
            compiled, request = self._for(tuple(data.shape))
            # The input is read where it lies (no copy); the outputs are copied out of the request's
            # buffers, which the next call reuses.
            results = request.infer([data], share_inputs=True, share_outputs=False)
            return [torch.from_numpy(np.asarray(results[o])) for o in compiled.outputs]


# -- int8 --------------------------------------------------------------------------------------
def int8_key(float_sha256: str) -> str:
    import nncf

    text = f"{float_sha256}|{version()}|{nncf.__version__}|{torch.__version__}|{INT8_RECIPE}"
    return hashlib.sha256(text.encode()).hexdigest()[:16] + "-int8"


def calibration_samples(images: list[np.ndarray]) -> list[np.ndarray]:
    """What NNCF calibrates on: the crops that torch's int8 calibrates on (quantize.crops) and each
    image whole (made at most WHOLE_MAX_SIDE wide and high), as (1,3,h,w) float32 arrays in [0, 1].
    Seen whole, an image's brightest and darkest parts set the activations' ranges: on the real
    blurry photos of ../shared/data/photos (not the GoPro pairs) calibrating on crops alone left
    one photo 39.8 dB from the float output, and with the whole image 43.8 (the MIXED preset)."""
    import cv2

    from .pixels import rgb8
    from .quantize import crops

    samples = [c.numpy() for c in crops(images)]
    for image in images:
        rgb = rgb8(image)
        h, w = rgb.shape[:2]
        scale = min(1.0, WHOLE_MAX_SIDE / max(h, w))
        if scale < 1:
            rgb = cv2.resize(rgb, (max(4, round(w * scale)), max(4, round(h * scale))), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[0] // 4 * 4, rgb.shape[1] // 4 * 4
        whole = np.ascontiguousarray(rgb[:h, :w].transpose(2, 0, 1)[None], dtype=np.float32) / 255
        samples.append(whole)
    return samples


def quantize(converted: Any, images: list[np.ndarray]) -> Any:
    """An int8 copy of the converted network, by NNCF's post-training quantization: weights int8
    per channel, activations int8 per tensor (symmetric: NNCF's PERFORMANCE preset) with their
    ranges the minimum and maximum seen on calibration_samples(images). Chosen on the real blurry
    photos (never the GoPro pairs): NNCF's default ranges (means of minima and maxima) left one
    photo 35.9 dB from the float output, these 43.7; asymmetric activations (the MIXED preset)
    were no better (43.8) and 13% slower (MIMO-UNet at 1280x720: 0.70 s against 0.62 s)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    samples = calibration_samples(images)
    ranges = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    with warnings.catch_warnings(), _quiet_nncf():
        warnings.simplefilter("ignore")
        return nncf.quantize(
            converted,
            nncf.Dataset(samples),
            subset_size=len(samples),
            advanced_parameters=ranges,
        )


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF draws progress bars on stdout (rich) and logs notes there: neither may reach ours,
    where `--json` writes its record."""
    import io
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def quantized_for(
    model: nn.Module,
    images: list[np.ndarray] | None = None,
    names: list[str] | None = None,
    cache: Path | None = None,
    auto: bool = False,
) -> tuple[Any, str]:
    """The OpenVINO int8 network for ``model``'s weights: from the cache, or calibrated now (on
    ``images``, or the image shipped for it) and cached, replacing what was there; and a line that
    says which. As quantize.quantized_for does for torch's int8."""
    from .quantize import calibration_images

    sha = state_sha256(model)
    folder = cache or cache_folder()
    key = int8_key(sha)
    if images is None and (found := load(folder, key, sha, INT8_RECIPE)) is not None:
        return found, f"OpenVINO int8, calibrated before ({folder / key}.xml)"
    if images is None:
        images, names = calibration_images()
    names = names or [f"image {i + 1}" for i in range(len(images))]
    quantized = quantize(converted_for(model, folder, sha)[0], images)
    with contextlib.suppress(OSError):
        save(quantized, folder, key, sha, INT8_RECIPE, calibrated_on=names, auto=auto)
    return quantized, f"OpenVINO int8, calibrated now on {', '.join(names)}"


def allowed_int8(model: nn.Module, cache: Path | None = None) -> Any | None:
    """The OpenVINO int8 network of these weights if one is stored and the user let --precision
    auto use it (mimo quantize --auto); else None. Reads only small records when there is none."""
    from .quantize import allows_auto

    folder = cache or cache_folder()
    if not can_quantize() or not any(allows_auto(r) for r in folder.glob("*-int8.json")):
        return None
    sha = state_sha256(model)
    key = int8_key(sha)
    return load(folder, key, sha, INT8_RECIPE) if allows_auto(folder / f"{key}.json") else None
