"""int8 on the CPU: static post-training quantization of a MIMO-UNet with PyTorch's FX tooling.

Weights are int8 per output channel, activations int8 per tensor with ranges observed on a few
calibration images (histogram observers), for the x86 engine (oneDNN/fbgemm, VNNI where the CPU
has it). Every layer is quantized: measured on this project's 2-core Xeon, MIMO-UNet's int8 output
stays 44 dB from its fp32 output, so no layer has to stay in float for quality. The other route,
PT2E (now in torchao, X86InductorQuantizer, then inductor with frozen weights), ran the lite model
at 1.52 s per 720p frame against FX's 1.42 s, after 34 s of compiling for each input size and with
torchao as a dependency, so FX, which runs the quantized kernels eagerly at any size, is used.

The quantized model is kept in the weights cache, keyed by the float weights' sha256, the torch
version and this module's RECIPE; the file's own sha256 is recorded beside it, so a damaged or
stale file is quantized again rather than trusted.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import write_bytes_atomic
from .checkpoints import state_sha256
from .pixels import rgb8

RECIPE = "fx-x86-static-1"  # changes when the quantization recipe does: older files are stale
CROP = 256  # calibration crops
BUNDLED_CALIBRATION = Path(__file__).resolve().parent / "bundled" / "calibration.jpg"


def _fx() -> tuple[Any, Any, Any]:
    with warnings.catch_warnings():  # torch.ao.quantization says it is moving to torchao
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    return get_default_qconfig_mapping, prepare_fx, convert_fx


def _prepared(model: nn.Module) -> nn.Module:
    get_mapping, prepare_fx, _ = _fx()
    if "x86" not in torch.backends.quantized.supported_engines:
        raise ValueError("int8 needs the x86 quantized engine, which this torch build lacks")
    float_model = copy.deepcopy(model).float().eval().cpu()
    float_model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    setattr(float_model, "ensemble", False)  # noqa: B010  (the ensemble wraps the quantized network)
    with warnings.catch_warnings(), _no_stack_traces():
        warnings.simplefilter("ignore")
        return prepare_fx(float_model, get_mapping("x86"), (torch.rand(1, 3, CROP, CROP),))  # type: ignore[no-any-return]


@contextlib.contextmanager
def _no_stack_traces() -> Iterator[None]:
    """FX records a stack trace per traced node, which cost 2 s for the lite model plus 2 s of
    importing torch._inductor to symbolize them; nothing here reads them. (A torch without the
    setting records them, as before.)"""
    try:
        from torch.fx import config
    except ImportError:
        yield
        return
    before = getattr(config, "do_not_emit_stack_traces", False)
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = before


def _converted(prepared: nn.Module) -> nn.Module:
    _, _, convert_fx = _fx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)  # type: ignore[no-any-return]


def crops(images: Iterable[np.ndarray], size: int = CROP, per_image: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """Up to ``per_image`` random size x size crops of each image, as (1,3,h,w) float tensors."""
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        rgb = rgb8(image)
        h, w = rgb.shape[:2]
        for _ in range(per_image):
            ch, cw = min(size, h) // 4 * 4, min(size, w) // 4 * 4
            y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            crop = np.ascontiguousarray(rgb[y : y + ch, x : x + cw])
            out.append(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)
    return out


def quantize(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    """An int8 copy of ``model`` (a MIMOUNet), its activation ranges observed on ``calibration``
    ((1,3,h,w) tensors in [0,1]). Raises ValueError without calibration images."""
    if not calibration:
        raise ValueError("int8 needs calibration images")
    prepared = _prepared(model)
    with torch.inference_mode():
        for x in calibration:
            prepared(x)
    return _converted(prepared)


def cache_key(float_sha256: str) -> str:
    return hashlib.sha256(f"{float_sha256}|{torch.__version__}|{RECIPE}".encode()).hexdigest()[:16]


def save(quantized: nn.Module, path: Path, float_sha256: str, calibrated_on: list[str], auto: bool = False) -> Path:
    buf = io.BytesIO()
    torch.save(quantized.state_dict(), buf)
    data = buf.getvalue()
    write_bytes_atomic(path, data)
    record = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "float_sha256": float_sha256,
        "torch": torch.__version__,
        "recipe": RECIPE,
        "calibrated_on": calibrated_on,
        "auto": auto,  # --precision auto may use it where it measures faster (mimo quantize --auto)
    }
    write_bytes_atomic(path.with_suffix(".json"), (json.dumps(record, indent=1) + "\n").encode())
    return path


def load(model: nn.Module, path: Path, float_sha256: str) -> nn.Module | None:
    """The int8 model stored at ``path`` for these float weights, or None when there is none, or
    it is damaged (sha256), or it was made from other weights, another torch or another recipe."""
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    expected = {"float_sha256": float_sha256, "torch": torch.__version__, "recipe": RECIPE}
    if any(record.get(k) != v for k, v in expected.items()) or hashlib.sha256(data).hexdigest() != record.get("sha256"):
        return None
    # The graph from uncalibrated observers (default ranges, no histogram search): the same
    # modules and nodes, whose scales and zero points the file then replaces.
    quantized = _converted(_prepared(model))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own TypedStorage notice
            quantized.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    except (RuntimeError, KeyError, ValueError, EOFError):
        return None
    return quantized


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Beside the weights (weights.side_cache): ``cache_dir`` (--cache-dir), $MIMO_CACHE_DIR or
    the hub's assets folder."""
    from .cache import side_cache

    return side_cache("int8", cache_dir)


def calibration_images(files: list[Path] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The images of ``files``, or the image shipped for calibrating; and their names."""
    from .images import read_image

    files = files or [BUNDLED_CALIBRATION]
    return [read_image(p).pixels for p in files], [p.name for p in files]


def quantized_for(
    model: nn.Module,
    images: list[np.ndarray] | None = None,
    names: list[str] | None = None,
    cache: Path | None = None,
    auto: bool = False,
) -> tuple[nn.Module, str]:
    """The int8 model for ``model``'s weights: from the cache, or calibrated now (on ``images``,
    or the shipped one) and cached, replacing what was there; and a line that says which."""
    sha = state_sha256(model)
    path = (cache or cache_folder()) / f"{cache_key(sha)}.pt"
    if images is None and (found := load(model, path, sha)) is not None:
        return found, f"int8, calibrated before ({path})"
    if images is None:
        images, names = calibration_images()
    names = names or [f"image {i + 1}" for i in range(len(images))]
    quantized = quantize(model, crops(images))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(quantized, path, sha, names, auto)
    except OSError:
        pass  # a read-only cache: calibrated again next time
    return quantized, f"int8, calibrated now on {', '.join(names)}"


def allowed_int8(model: nn.Module, cache: Path | None = None) -> nn.Module | None:
    """The int8 model of these weights if one is stored and the user let --precision auto use
    it (mimo quantize --auto); else None. Reads only a small record when there is none."""
    folder = cache or cache_folder()
    if not any(allows_auto(record) for record in folder.glob("*.json")):
        return None  # the common case, and cheap: no weights hashed on every Deblurrer
    sha = state_sha256(model)
    path = folder / f"{cache_key(sha)}.pt"
    return load(model, path, sha) if allows_auto(path.with_suffix(".json")) else None


def allows_auto(record: Path) -> bool:
    """Whether the int8 model's record (its .json) says --precision auto may use it (mimo
    quantize --auto): torch's and OpenVINO's int8 records alike."""
    try:
        return json.loads(record.read_text()).get("auto") is True
    except (OSError, ValueError, AttributeError):
        return False
