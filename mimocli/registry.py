"""Variants as data: one frozen row per MIMO-UNet variant, and lookup by name or alias."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import WeightsError


@dataclass(frozen=True)
class Variant:
    name: str
    num_res: int
    description: str
    aliases: tuple[str, ...] = ()
    tflop_per_720p: float = 0.0  # counted with torch.utils.flop_counter, 1280x720 frame
    ensemble: bool = False  # MIMO-UNet++: geometric self-ensemble at test time
    weights: str = ""  # key into weights/registry.json; defaults to the variant name

    @property
    def weights_key(self) -> str:
        return self.weights or self.name


VARIANTS: tuple[Variant, ...] = (
    Variant("mimo-unet", 8, "MIMO-UNet, GoPro", ("base",), 1.79),
    Variant("mimo-unet-plus", 20, "MIMO-UNet+, GoPro", ("plus",), 4.24),
    Variant(
        "mimo-unet-plus-plus",
        20,
        "MIMO-UNet++: MIMO-UNet+ with geometric self-ensemble",
        ("plusplus", "++"),
        4.24 * 8,
        ensemble=True,
        weights="mimo-unet-plus",
    ),
    Variant("mimo-unet-plus-realblur", 20, "MIMO-UNet+, RealBlur-J + GoPro", ("realblur",), 4.24),
)

DEFAULT_VARIANT = "mimo-unet-plus"


def get_variant(name: str) -> Variant:
    """The variant called ``name`` or one of its aliases. Raises WeightsError when unknown."""
    key = name.strip().lower()
    for v in VARIANTS:
        if key == v.name or key in v.aliases:
            return v
    known = ", ".join(f"{v.name} ({'/'.join(v.aliases)})" for v in VARIANTS)
    raise WeightsError(f"unknown variant {name!r}", f"choose one of: {known}")


_ENCODER_BLOCK = re.compile(r"^(?:module\.)?Encoder\.0\.layers\.(\d+)\.")


def num_res_of(state_dict: Mapping[str, object]) -> int:
    """Residual blocks per level, counted from ``Encoder.0.layers.<i>`` keys. 0 when none."""
    indices = {int(m.group(1)) for k in state_dict if (m := _ENCODER_BLOCK.match(k))}
    return max(indices) + 1 if indices else 0


def detect_variant(state_dict: Mapping[str, object]) -> Variant:
    """The first variant whose architecture fits ``state_dict``. Raises WeightsError when none does."""
    n = num_res_of(state_dict)
    for v in VARIANTS:
        if v.num_res == n and not v.ensemble:
            return v
    if n == 0:
        raise WeightsError(
            "these weights are not a MIMO-UNet state dict (no Encoder.0.layers.* keys)",
            "pass the authors' MIMO-UNet / MIMO-UNet+ checkpoint or a file exported by mimocli",
        )
    return Variant(f"mimo-unet-r{n}", n, f"MIMO-UNet with {n} residual blocks per level")
