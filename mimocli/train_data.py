"""Training data: blurry/sharp pairs read from disk, or sharp photos that get a fresh random
camera shake per crop (mimocli.shake). A batch depends only on the generator it is given."""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write
from .errors import ImageError
from .evaluate import Pair
from .images import is_image_path, read_image
from .pixels import rgb8
from .shake import CropPlan, ShakeModel, photo_key, plan_crop, shake_crop, split_of

PACK_MANIFEST = "mimo-pack.json"  # inside a pack: how it was made, and from what


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


@dataclass(frozen=True)
class PackedPhoto:
    """A photo inside a pack (a zip of JPEGs that ``pack_photos`` writes), named as the file it
    was made from: ``os.fspath`` gives PACK/FOLDER/FILE, so ``split_of`` and ``photo_key`` see
    the same FOLDER/FILE as for the loose file, and the split is the same."""

    pack: Path
    name: str  # FOLDER/FILE inside the pack

    def __fspath__(self) -> str:
        return f"{self.pack}/{self.name}"

    def __str__(self) -> str:
        return self.__fspath__()

    def read(self) -> bytes:
        with zipfile.ZipFile(self.pack) as z:
            return z.read(self.name)


Photo = Path | PackedPhoto


def is_pack(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def pack_members(pack: Path) -> list[PackedPhoto]:
    """The photos in a pack, in its order. Raises ImageError for a zip that is not a pack."""
    try:
        with zipfile.ZipFile(pack) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise ImageError(f"{pack}: not a readable zip ({e})", "make it again with weights/pack_photos.py") from None
    if PACK_MANIFEST not in names:
        raise ImageError(f"{pack}: not a mimocli pack (no {PACK_MANIFEST})", "make it with weights/pack_photos.py")
    return [PackedPhoto(pack, n) for n in names if n != PACK_MANIFEST and is_image_path(Path(n))]


def find_photos(roots: list[Path]) -> list[Photo]:
    """Image files under ``roots`` (files, folders descended into, or packs), sorted within each
    root. Raises ImageError when there are none."""
    found: list[Photo] = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
        elif is_pack(root):
            found += pack_members(root)
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

    def __init__(self, photos: list[Photo], crop: int, model: ShakeModel = ShakeModel(), workers: int = 2):  # noqa: B008
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
        return read_photo(self.photos[i])

    def _crop(self, pick: tuple[int, int, bool]) -> tuple[np.ndarray, np.ndarray]:
        i, seed, flipped = pick
        blur, sharp, _ = shake_crop(self.load(i), np.random.default_rng(seed), self.crop, self.model)
        return (blur[:, ::-1], sharp[:, ::-1]) if flipped else (blur, sharp)

    def _picks(self, rng: np.random.Generator, size: int, flip: bool) -> list[tuple[int, int, bool]]:
        """(photo, seed of its shake, flipped) per crop: the same for either renderer."""
        return [
            (int(rng.integers(len(self.photos))), int(rng.integers(2**63)), bool(flip and rng.random() < 0.5))
            for _ in range(size)
        ]

    def _plan(self, pick: tuple[int, int, bool]) -> tuple[int, CropPlan, bool]:
        i, seed, flipped = pick
        return i, plan_crop(self.load(i).shape, np.random.default_rng(seed), self.crop, self.model), flipped

    def plans(self, rng: np.random.Generator, size: int, flip: bool) -> list[tuple[int, CropPlan, bool]]:
        """The crops ``batch`` would make from ``rng``, drawn but not rendered (photo index, plan,
        flipped), for ``mimocli.shake_torch.render_crops`` on the training device."""
        return list(self._pool.map(self._plan, self._picks(rng, size, flip)))

    def batch(self, rng: np.random.Generator, size: int, crop: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        crops = list(self._pool.map(self._crop, self._picks(rng, size, flip)))  # decoded and blurred in parallel
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


def read_photo(photo: Photo) -> np.ndarray:
    """(H,W,3) uint8 RGB of a photo, upright: a file (any format mimocli reads) or a packed JPEG."""
    if isinstance(photo, PackedPhoto):
        try:
            with Image.open(io.BytesIO(photo.read())) as im:
                return np.array(im.convert("RGB"))  # a writable copy, as read_image gives
        except (OSError, KeyError, ValueError) as e:
            raise ImageError(f"{photo}: not a readable image ({e})", "make the pack again") from None
    return rgb8(read_image(photo).pixels)


def header_size(path: Photo) -> tuple[int, int]:
    """(height, width) of an image as read_image would return it, from its header only."""
    try:
        with Image.open(io.BytesIO(path.read()) if isinstance(path, PackedPhoto) else path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees when read
                w, h = h, w
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})", "remove it or replace it") from None
    return h, w


@dataclass(frozen=True)
class PackSummary:
    path: str
    photos: int
    bytes: int
    quality: int  # the JPEG quality the size budget allowed
    by_split: dict[str, int]
    resized: int  # photos scaled down to the long side


def _pack_pixels(photo: Photo, long_side: int) -> tuple[Image.Image, bool]:
    """A photo upright as RGB, scaled down (area resampling) to at most ``long_side``; resized?"""
    pixels = read_photo(photo)
    h, w = pixels.shape[:2]
    img = Image.fromarray(pixels)
    if max(h, w) <= long_side:
        return img, False
    s = long_side / max(h, w)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX), True


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=0)  # 4:4:4: targets keep their colour edges
    return buf.getvalue()


def pack_photos(
    roots: list[Path],
    out: str | os.PathLike[str],
    long_side: int = 1280,
    quality: int = 95,
    max_bytes: int = 40 * 2**20,
    splits: tuple[str, ...] = ("train", "val"),
) -> PackSummary:
    """Pack the photos under ``roots`` that fall in ``splits`` (by ``split_of``, on their
    FOLDER/FILE names, which the pack keeps) into one zip that ``mimo train --shake`` reads:
    JPEGs (4:4:4) of at most ``long_side`` pixels on the long side, stored uncompressed, plus a
    manifest. The quality is the highest up to ``quality`` whose pack fits ``max_bytes`` (found
    by bisection, recorded in the manifest); the same photos give the same bytes.
    Raises ImageError when no photo falls in ``splits`` or no quality down to 50 fits."""
    photos = [p for p in find_photos(roots) if split_of(p) in splits]
    if not photos:
        raise ImageError(f"{', '.join(map(str, roots))}: no photos in the {'/'.join(splits)} split", "pass more photos")
    names = [f"{Path(p).parent.name}/{Path(p).name}" for p in photos]
    if len(set(names)) != len(names):
        raise ImageError(f"{roots[0]}: two photos share a FOLDER/FILE name", "rename one of them")
    images = [_pack_pixels(p, long_side) for p in photos]
    manifest = {"long_side": long_side, "quality": 0, "splits": list(splits), "photos": names}
    # a stored zip entry costs 76 bytes of headers plus its name twice; 22 bytes end the archive
    overhead = sum(76 + 2 * len(n.encode()) for n in [*names, PACK_MANIFEST]) + 22 + len(json.dumps(manifest)) + 8

    @functools.cache
    def coded(q: int) -> list[bytes]:
        return [_jpeg(img, q) for img, _ in images]

    def fits(q: int) -> bool:
        return sum(map(len, coded(q))) + overhead <= max_bytes

    lo, hi = 50, quality
    if not fits(lo):
        raise ImageError(f"{roots[0]}: {len(names)} photos do not fit {max_bytes} bytes", "pass a smaller --long-side")
    while lo < hi:  # the highest quality that fits: JPEG size grows with quality
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    counts: dict[str, int] = {}
    stamp = (1980, 1, 1, 0, 0, 0)  # fixed: the same photos give the same bytes
    with atomic_write(Path(out)) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, photo, data in zip(names, photos, coded(lo), strict=True):
            z.writestr(zipfile.ZipInfo(name, date_time=stamp), data)
            counts[split_of(photo)] = counts.get(split_of(photo), 0) + 1
        manifest["quality"] = lo
        z.writestr(zipfile.ZipInfo(PACK_MANIFEST, date_time=stamp), json.dumps(manifest))
    size = Path(out).stat().st_size
    return PackSummary(str(out), len(photos), size, lo, counts, sum(r for _, r in images))
