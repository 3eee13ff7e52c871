"""Pure tensor maths for running a fully convolutional network on images of any size.

Padding to a multiple of 4, a grid of overlapping tiles whose origins are multiples of 4 (so the
network's nearest-neighbour halving keeps the same rows and columns in a tile as in the whole
image), and smooth blend windows that make overlapping tiles sum to a seamless image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

ALIGN = 4  # two nearest-neighbour halvings: sizes and tile origins must be multiples of 4
SCALES = (4, 2, 1)  # the network's outputs, coarse to fine, as divisors of the input size


def round_up(n: int, multiple: int = ALIGN) -> int:
    return -(-n // multiple) * multiple


def round_down(n: int, multiple: int = ALIGN) -> int:
    return n // multiple * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int = ALIGN) -> torch.Tensor:
    """x: (B,C,H,W) -> reflect-padded at the bottom and right to multiples of ``multiple``.

    Reflection needs the pad to be smaller than the side; tiny images fall back to replication.
    """
    h, w = x.shape[-2:]
    ph, pw = round_up(h, multiple) - h, round_up(w, multiple) - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins along one axis of ``length`` for tiles of ``tile`` overlapping by >= ``overlap``.

    length, tile and overlap are multiples of 4 and 0 <= overlap < tile. The tiles are spread
    evenly from 0 to length - tile, each origin rounded down to a multiple of 4.
    """
    if tile >= length:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    last = length - tile
    starts = sorted({round_down(round(i * last / (count - 1))) for i in range(count)})
    starts[-1] = last
    return starts


def _ramp(n: int, rising: bool) -> torch.Tensor:
    # Raised-cosine halves: sin^2 rising and cos^2 falling over the same n samples sum to one,
    # and neither touches zero, so every pixel keeps a positive total weight.
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n * (math.pi / 2)
    return torch.sin(t) ** 2 if rising else torch.cos(t) ** 2


def window_1d(starts: list[int], index: int, size: int, scale: int = 1) -> torch.Tensor:
    """Blend weights of tile ``index`` (length ``size``) along one axis, at 1/``scale`` resolution.

    The weight ramps down only where the tile overlaps a neighbour, so the image border keeps
    full weight.
    """
    n = size // scale
    w = torch.ones(n)
    start = starts[index] // scale
    if index > 0:
        left = (starts[index - 1] + size) // scale - start
        if left > 0:
            w[:left] = torch.minimum(w[:left], _ramp(left, rising=True))
    if index + 1 < len(starts):
        right = start + n - starts[index + 1] // scale
        if right > 0:
            w[n - right :] = torch.minimum(w[n - right :], _ramp(right, rising=False))
    return w


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int
    row: int
    col: int


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering an (H, W) image whose sides are multiples of 4."""

    height: int
    width: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    tile_h: int
    tile_w: int

    @classmethod
    def plan(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        """Raises ValueError unless sizes are multiples of 4 and 0 <= overlap < tile."""
        if height % ALIGN or width % ALIGN:
            raise ValueError(f"image {width}x{height} is not padded to a multiple of {ALIGN}")
        tile = max(ALIGN, round_down(tile))
        overlap = min(round_up(max(overlap, 0)), tile - ALIGN)
        th, tw = min(tile, height), min(tile, width)
        ys = tile_starts(height, th, overlap)
        xs = tile_starts(width, tw, overlap)
        return cls(height, width, tuple(ys), tuple(xs), th, tw)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for r, y in enumerate(self.ys):
            for c, x in enumerate(self.xs):
                yield Tile(y, x, self.tile_h, self.tile_w, r, c)

    def window(self, tile: Tile, scale: int = 1) -> torch.Tensor:
        """(h/scale, w/scale) blend weights of ``tile`` at 1/``scale`` resolution."""
        wy = window_1d(list(self.ys), tile.row, self.tile_h, scale)
        wx = window_1d(list(self.xs), tile.col, self.tile_w, scale)
        return wy[:, None] * wx[None, :]
