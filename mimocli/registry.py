"""Variants as data: one frozen row per MIMO-UNet variant, read from the one table
(weights/registry.json), and lookup by name or alias."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import WeightsError


@dataclass(frozen=True)
class Variant:
    name: str
    num_res: int  # residual blocks per level
    description: str
    aliases: tuple[str, ...] = ()
    tflop_per_720p: float = 0.0  # counted with torch.utils.flop_counter, 1280x720 frame
    ensemble: bool = False  # MIMO-UNet++: geometric self-ensemble at test time
    weights: str = ""  # key into weights/registry.json; defaults to the variant name
    base_channel: int = 32  # channels at full scale (twice and four times that at 1/2 and 1/4)

    @property
    def weights_key(self) -> str:
        return self.weights or self.name


def registry_file() -> Path:
    """weights/registry.json: inside the package once installed, beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "weights_registry.json", here.parent / "weights" / "registry.json"):
        if candidate.is_file():
            return candidate
    raise WeightsError("the weights registry is missing from this installation", "reinstall mimocli")


@functools.cache
def table() -> Mapping[str, Mapping[str, Any]]:
    """The one table of variants, read once per process: a row per variant with its shape
    (``num_res``, ``base_channel``, ``ensemble``) and, where it has weights of its own, where they
    come from (``sources``, ``sha256``...: see weights.load_registry)."""
    rows = json.loads(registry_file().read_text())
    return MappingProxyType({k: MappingProxyType(v) for k, v in rows.items()})


def _variant(name: str, row: Mapping[str, Any]) -> Variant:
    return Variant(
        name,
        int(row["num_res"]),
        row["summary"],
        tuple(row.get("aliases", ())),
        float(row.get("tflop_per_720p", 0.0)),
        bool(row.get("ensemble", False)),
        row.get("weights", ""),
        int(row.get("base_channel", 32)),
    )


VARIANTS: tuple[Variant, ...] = tuple(_variant(k, row) for k, row in table().items())

DEFAULT_VARIANT = "mimo-unet-plus"
BUNDLED_VARIANT = "lite"  # mimocli's own weights, shipped in the package


def get_variant(name: str) -> Variant:
    """The variant called ``name`` or one of its aliases. Raises WeightsError when unknown."""
    key = name.strip().lower()
    for v in VARIANTS:
        if key == v.name or key in v.aliases:
            return v
    known = ", ".join(f"{v.name} ({'/'.join(v.aliases)})" for v in VARIANTS)
    raise WeightsError(f"unknown variant {name!r}", f"choose one of: {known}")


_ENCODER_BLOCK = re.compile(r"^(?:module\.)?Encoder\.0\.layers\.(\d+)\.")
_STEM = re.compile(r"^(?:module\.)?feat_extract\.0\.main\.0\.weight$")


def architecture_of(state_dict: Mapping[str, object]) -> tuple[int, int]:
    """(residual blocks per level, base channels) of a MIMO-UNet state dict (tensors, or shapes as
    lists): the blocks counted from ``Encoder.0.layers.<i>`` keys, the width from the first
    convolution's output channels. 0 for a part that is missing."""
    indices = {int(m.group(1)) for k in state_dict if (m := _ENCODER_BLOCK.match(k))}
    stem = next((v for k, v in state_dict.items() if _STEM.match(k)), None)
    shape = getattr(stem, "shape", stem if isinstance(stem, (list, tuple)) else ())  # a tensor, or a manifest's shape
    width = int(shape[0]) if len(shape) == 4 else 0
    return (max(indices) + 1 if indices else 0), width


def num_res_of(state_dict: Mapping[str, object]) -> int:
    """Residual blocks per level (architecture_of's first half). 0 when none."""
    return architecture_of(state_dict)[0]


def detect_variant(state_dict: Mapping[str, object]) -> Variant:
    """The first variant whose depth and width fit ``state_dict``, or an unnamed one of that shape.
    Raises WeightsError when it is no MIMO-UNet state dict."""
    n, width = architecture_of(state_dict)
    if n == 0 or width == 0:
        raise WeightsError(
            "these weights are not a MIMO-UNet state dict (no Encoder.0.layers.* or feat_extract.0 keys)",
            "pass the authors' MIMO-UNet / MIMO-UNet+ checkpoint or a file exported by mimocli",
        )
    for v in VARIANTS:
        if v.num_res == n and v.base_channel == width and not v.ensemble:
            return v
    suffix = "" if width == 32 else f"c{width}"
    return Variant(
        f"mimo-unet-r{n}{suffix}",
        n,
        f"MIMO-UNet with {n} residual blocks per level, {width} channels",
        base_channel=width,
    )


BUNDLED = "bundled://"


# -- weights: the rows that have files of their own --------------------------------------------
@dataclass(frozen=True)
class WeightsEntry:
    key: str
    description: str
    architecture: str
    sources: tuple[str, ...]
    filename: str
    size: int | None = None
    sha256: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    provenance: str = ""
    license: str = ""
    fallback: bool = False  # bundled weights good enough to stand in when the default cannot be had

    @property
    def bundled(self) -> Path | None:
        """The shipped file for a ``bundled://`` entry, else None."""
        for source in self.sources:
            if source.startswith(BUNDLED):
                return Path(__file__).resolve().parent / "bundled" / source.removeprefix(BUNDLED)
        return None


@functools.cache
def _entries() -> dict[str, WeightsEntry]:
    return {
        key: WeightsEntry(
            key=key,
            description=e["description"],
            architecture=key,
            sources=tuple(e["sources"]),
            filename=e["filename"],
            size=e.get("size"),
            sha256=e.get("sha256"),
            metrics=e.get("metrics", {}),
            provenance=e.get("provenance", ""),
            license=e.get("license", ""),
            fallback=bool(e.get("fallback", False)),
        )
        for key, e in table().items()
        if "sources" in e
    }


def load_registry() -> dict[str, WeightsEntry]:
    """The variants that have weights of their own, by key (the registry is read once)."""
    return dict(_entries())


def registry_entry(key: str) -> WeightsEntry:
    entries = load_registry()
    if key not in entries:
        raise WeightsError(f"no pretrained weights are registered for {key!r}", f"known: {', '.join(entries)}")
    return entries[key]
