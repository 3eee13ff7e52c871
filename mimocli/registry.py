"""Networks and variants as data: one row per architecture (how to recognise its state dict and
how to build it, as spandrel's ArchRegistry), one frozen row per variant, read from the one
table (weights/registry.json), and lookup by name or alias. torch is imported only to build."""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Callable, Mapping
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
    architecture: str = "mimo-unet"  # the key of its row in ARCHITECTURES

    @property
    def weights_key(self) -> str:
        return self.weights or self.name

    @property
    def arch(self) -> Architecture:
        return get_architecture(self.architecture)

    def shape(self) -> str:
        """'MIMO-UNet with 8 blocks of 32 channels': what its weights hold, for messages."""
        return f"{self.arch.name} with {self.num_res} blocks of {self.base_channel} channels"


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
        row.get("architecture", "mimo-unet"),
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


def _shape(
    blocks: re.Pattern[str], stem: re.Pattern[str], offset: int
) -> Callable[[Mapping[str, object]], tuple[int, int]]:
    """A detector: (residual blocks, base channels) from a state dict (tensors, or shapes as
    lists), the blocks counted from the keys ``blocks`` matches (less ``offset`` non-residual
    layers), the width from the output channels of the convolution ``stem`` names; 0 for a part
    that is missing."""

    def shape_of(state_dict: Mapping[str, object]) -> tuple[int, int]:
        indices = {int(m.group(1)) for k in state_dict if (m := blocks.match(k))}
        first = next((v for k, v in state_dict.items() if stem.match(k)), None)
        dims = getattr(first, "shape", first if isinstance(first, (list, tuple)) else ())  # a tensor, or a shape
        width = int(dims[0]) if len(dims) == 4 else 0
        return (max(indices) + 1 - offset if indices else 0), width

    return shape_of


@dataclass(frozen=True)
class Architecture:
    """A network mimocli runs: how to recognise its state dict (``shape_of``: residual blocks and
    base channels, 0 where its keys are missing) and how to build it (``builder``, a class
    ``module:Name`` taking num_res, base_channel, ensemble), imported only when one is built."""

    key: str
    name: str
    shape_of: Callable[[Mapping[str, object]], tuple[int, int]]
    builder: str
    keys: str  # what its state dict's keys look like, for the one-line refusal of a foreign one
    # Its outputs besides the image (DeblurResult.scales keys) and the tag that names their files
    # (--save-scales: NAME_deblurred_TAG.png).
    sides: tuple[tuple[float | str, str], ...] = ()

    def build(self, num_res: int, base_channel: int = 32, ensemble: bool = False) -> Any:
        module, name = self.builder.split(":")
        return getattr(importlib.import_module(module), name)(num_res, base_channel, ensemble)


_M = r"^(?:module\.)?"
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        "mimo-unet",
        "MIMO-UNet",
        _shape(
            re.compile(_M + r"Encoder\.0\.layers\.(\d+)\."), re.compile(_M + r"feat_extract\.0\.main\.0\.weight$"), 0
        ),
        "mimocli.arch:MIMOUNet",
        "Encoder.0.layers.*, feat_extract.0.*",
        ((0.5, "x0.5"), (0.25, "x0.25")),
    ),
    Architecture(
        "xydeblur",
        "XYDeblur",
        # Encoder1.layers.0 is the first convolution, the residual blocks follow it.
        _shape(
            re.compile(_M + r"Encoder1\.layers\.(\d+)\."), re.compile(_M + r"Encoder1\.layers\.0\.main\.0\.weight$"), 1
        ),
        "mimocli.xydeblur:XYDeblur",
        "Encoder1.layers.*, Decoder1_4.*",
        (("residual-x", "residual-x"), ("residual-y", "residual-y")),
    ),
)


def get_architecture(key: str) -> Architecture:
    for a in ARCHITECTURES:
        if a.key == key:
            return a
    raise WeightsError(f"unknown architecture {key!r}", f"known: {', '.join(a.key for a in ARCHITECTURES)}")


def architecture_of(state_dict: Mapping[str, object]) -> tuple[int, int]:
    """(residual blocks per level, base channels) of a MIMO-UNet state dict; 0 for a part that is
    missing (ARCHITECTURES' first row)."""
    return ARCHITECTURES[0].shape_of(state_dict)


def num_res_of(state_dict: Mapping[str, object]) -> int:
    """Residual blocks per level of a MIMO-UNet state dict (architecture_of's first half). 0 when none."""
    return architecture_of(state_dict)[0]


def detect_variant(state_dict: Mapping[str, object]) -> Variant:
    """The first variant whose architecture, depth and width fit ``state_dict``, or an unnamed one
    of that shape. Raises WeightsError when it is no state dict of a network mimocli runs."""
    for arch in ARCHITECTURES:
        n, width = arch.shape_of(state_dict)
        if n <= 0 or width <= 0:
            continue
        for v in VARIANTS:
            if (v.architecture, v.num_res, v.base_channel) == (arch.key, n, width) and not v.ensemble:
                return v
        suffix = "" if width == 32 else f"c{width}"
        return Variant(
            f"{arch.key}-r{n}{suffix}",
            n,
            f"{arch.name} with {n} residual blocks per level, {width} channels",
            base_channel=width,
            architecture=arch.key,
        )
    names = " nor ".join(a.name for a in ARCHITECTURES)
    raise WeightsError(
        f"these weights are not a MIMO-UNet or any network mimocli runs: neither {names} "
        f"({'; '.join(f'{a.name}: {a.keys}' for a in ARCHITECTURES)})",
        "pass the authors' MIMO-UNet, MIMO-UNet+ or XYDeblur checkpoint, or a file exported by mimocli",
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
    git_blob_sha1: str | None = None  # a file published in a git repository: its object id there

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
            git_blob_sha1=e.get("git_blob_sha1"),
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
