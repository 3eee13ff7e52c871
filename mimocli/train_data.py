"""Training data: blurry/sharp pairs read from disk, or sharp photos that get a fresh random
camera shake per crop (mimocli.shake). A batch depends only on the generator it is given."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ImageError
from .evaluate import Pair
from .images import is_image_path, read_image
from .pixels import rgb8
from .shake import ShakeModel, photo_key, shake_crop


class PairData:
    """Blurry/sharp pairs read on demand (sizes from the file headers up front), the most recent
    ``cache`` pairs kept in memory as uint8, cropped and flipped per batch. A batch depends only
    on the generator it is given, never on what happens to be cached."""

    def __init__(self, pairs: list[Pair], crop: int, cache: int = 64, workers: int = 4):
        self.pairs = pairs
        self.sizes: list[tuple[int, int]] = []
        for p in pairs:
            size = header_size(p.blur)
            if size != header_size(p.sharp):
                raise ImageError(f"{p.blur}: its sharp image has another size", "pairs must have the same size")
            if min(size) < crop:
                raise ImageError(
                    f"{p.blur}: {size[1]}x{size[0]} is smaller than the {crop}px crop", "pass a smaller --crop"
                )
            self.sizes.append(size)
        self.load = functools.lru_cache(maxsize=cache)(self._load)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mimo-data")

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        blur, sharp = rgb8(read_image(self.pairs[i].blur).pixels), rgb8(read_image(self.pairs[i].sharp).pixels)
        if blur.shape != sharp.shape or blur.shape[:2] != self.sizes[i]:
            raise ImageError(f"{self.pairs[i].blur}: changed while training", "leave the data alone during a run")
        return blur, sharp

    def batch(self, rng: np.random.Generator, size: int, crop: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        for _ in range(size):
            i = int(rng.integers(len(self.pairs)))
            h, w = self.sizes[i]
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            picks.append((i, y, x, bool(flip and rng.random() < 0.5)))
        images = list(self._pool.map(self.load, [i for i, _, _, _ in picks]))  # decoded in parallel
        blurs, sharps = [], []
        for (_, y, x, flipped), (blur, sharp) in zip(picks, images, strict=True):
            b, s = blur[y : y + crop, x : x + crop], sharp[y : y + crop, x : x + crop]
            if flipped:
                b, s = b[:, ::-1], s[:, ::-1]
            blurs.append(b)
            sharps.append(s)
        to = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        return to(blurs), to(sharps)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def find_photos(roots: list[Path]) -> list[Path]:
    """Image files under ``roots`` (files or folders, descended into), sorted. Raises ImageError
    when there are none."""
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
        elif root.is_file():
            found.append(root)
        else:
            raise ImageError(f"{root}: no such file or folder", "pass sharp photos or folders of them")
    if not found:
        raise ImageError(f"{', '.join(map(str, roots))}: holds no images", "pass sharp photos or folders of them")
    return found


class ShakeData:
    """Sharp photos decoded once (8-bit RGB, kept in memory), each crop blurred by a fresh shake
    drawn from its own seed, so a batch depends only on the generator it is given."""

    def __init__(self, photos: list[Path], crop: int, model: ShakeModel = ShakeModel(), workers: int = 2):  # noqa: B008
        self.photos = photos
        self.model = model
        self.crop = crop
        for p in photos:
            h, w = header_size(p)
            if min(h, w) < crop:
                raise ImageError(f"{p}: {w}x{h} is smaller than the {crop}px crop", "pass a smaller --crop")
        self.load = functools.lru_cache(maxsize=None)(self._load)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mimo-shake")

    def __len__(self) -> int:
        return len(self.photos)

    def _load(self, i: int) -> np.ndarray:
        return rgb8(read_image(self.photos[i]).pixels)

    def _crop(self, pick: tuple[int, int, bool]) -> tuple[np.ndarray, np.ndarray]:
        i, seed, flipped = pick
        blur, sharp, _ = shake_crop(self.load(i), np.random.default_rng(seed), self.crop, self.model)
        return (blur[:, ::-1], sharp[:, ::-1]) if flipped else (blur, sharp)

    def batch(self, rng: np.random.Generator, size: int, crop: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        picks = [
            (int(rng.integers(len(self.photos))), int(rng.integers(2**63)), bool(flip and rng.random() < 0.5))
            for _ in range(size)
        ]
        crops = list(self._pool.map(self._crop, picks))  # decoded and blurred in parallel
        to = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        return to([b for b, _ in crops]), to([s for _, s in crops])

    def fixed(self, per_photo: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``per_photo`` shaken crops of every photo, each seeded by the photo's name: the same set
        on every machine and in every run."""
        out = []
        for i, p in enumerate(self.photos):
            rng = np.random.default_rng(photo_key(p))
            out += [shake_crop(self.load(i), rng, self.crop, self.model)[:2] for _ in range(per_photo)]
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as read_image would return it, from its header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees when read
                w, h = h, w
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})", "remove it or replace it") from None
    return h, w
