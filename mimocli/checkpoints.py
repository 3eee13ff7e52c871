"""Weight files: reading safetensors and the authors' torch pickles (weights only, never code),
unwrapping their containers, building a MIMOUNet from them strictly, and writing converted
safetensors with a record of their size, sha256 and origin beside them."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .arch import MIMOUNet
from .atomic import write_bytes_atomic
from .cache import write_record
from .errors import WeightsError
from .registry import Variant, detect_variant

PICKLE_SUFFIXES = (".pkl", ".pth", ".pt", ".ckpt", ".bin")

if TYPE_CHECKING:
    from .xydeblur import XYDeblur

    Network: TypeAlias = MIMOUNet | XYDeblur  # the networks mimocli runs (registry.ARCHITECTURES)
else:
    Network = torch.nn.Module


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch pickle (zip or legacy format).

    Pickles are read with ``weights_only=True`` and never otherwise; ``{'model': sd}`` wrappers
    and ``module.`` prefixes are removed. Raises WeightsError when the file holds no state dict.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(q.name for q in p.iterdir() if q.suffix in (".safetensors", *PICKLE_SUFFIXES))
        which = f" (it holds {', '.join(found[:3])})" if found else ""
        raise WeightsError(f"{p}: is a folder, not a weights file{which}", "pass the weights file itself to --weights")
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file", "check the path given to --weights")
    if p.suffix == ".safetensors":
        try:
            sd = load_file(p)
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(
                f"{p}: not a readable safetensors file ({e})",
                "the file is damaged or not safetensors: download or export it again",
            ) from e
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors come in many types; all mean the same to a user
            raise WeightsError(
                f"{p}: refused: {_pickle_problem(e)}", "pass a MIMO-UNet checkpoint or a .safetensors file"
            ) from e
        sd = _unwrap(obj, p)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def read_shapes(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """The keys and shapes of a weights file, for recognising its network (registry.detect_variant)
    without loading it: a safetensors file's header only; a pickle is read whole (read_state_dict).
    Raises WeightsError as read_state_dict does."""
    p = Path(path)
    if p.suffix == ".safetensors" and p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(p, framework="pt") as f:
                return {k.removeprefix("module."): list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(
                f"{p}: not a readable safetensors file ({e})",
                "the file is damaged or not safetensors: download or export it again",
            ) from e
    return {k: list(v.shape) for k, v in read_state_dict(p).items()}


def _pickle_problem(error: Exception) -> str:
    """What is wrong with a pickle, in a few words: the object it tried to build, if that is
    why (never PyTorch's advice to load it unsafely), else the first line of the error."""
    text = str(error)
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds code to run ({found.group(1)}), not only tensors"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "weights_only" not in line and not line.startswith(("Weights only", "Check the doc"))
    ]
    return f"not a readable torch checkpoint ({lines[0] if lines else type(error).__name__})"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "params_ema", "params"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors", "pass a MIMO-UNet checkpoint")
    return {str(k): v for k, v in obj.items()}


def build_model(state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> tuple[Network, Variant]:
    """A float32 network of the architecture ``state_dict`` holds (registry.ARCHITECTURES: MIMO-UNet
    of any depth and width, XYDeblur), loaded strictly. Raises WeightsError for a state dict of no
    known network, damaged values or a mismatch."""
    try:
        variant = detect_variant(state_dict)
    except WeightsError as e:
        raise WeightsError(f"{source}: {e.message}", e.hint) from None
    damaged = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if damaged:
        raise WeightsError(
            f"{source}: {len(damaged)} of {len(state_dict)} tensors hold NaN/Inf values ({damaged[0]}, ...)",
            "the file is damaged: download or export it again",
        )
    model = variant.arch.build(variant.num_res, variant.base_channel)
    try:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise WeightsError(
            f"{source}: does not fit {variant.shape()} ({detail})",
            "leave --variant out to detect the network from the file, or pass the variant it was trained as",
        ) from e
    return model.eval(), variant


def convert(state_dict: Mapping[str, torch.Tensor], variant: Variant, dest: Path, **info: Any) -> Path:
    """Write a state dict that ``build_model`` accepted as safetensors to ``dest``, atomically,
    and record its size and sha256 beside it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    meta = {
        "format": "pt",
        "architecture": variant.arch.name,
        "num_res": str(variant.num_res),
        "base_channel": str(variant.base_channel),
    }
    write_bytes_atomic(dest, save(tensors, metadata=meta))
    shape = {"architecture": variant.architecture, "num_res": variant.num_res, "base_channel": variant.base_channel}
    write_record(dest, **shape, **info)
    return dest


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's float weights (what an int8 model is made from, and what a video run records)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """The first 16 hex digits of state_sha256: what a video run's manifest records of the model."""
    return state_sha256(model)[:16]
