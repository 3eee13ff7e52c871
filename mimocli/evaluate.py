"""Quality as data: PSNR and SSIM of deblurred images against their sharp originals, measured the
way the paper does, over GoPro-layout folders; never prints.

The authors' evaluation clamps the output to [0, 1] and rounds it to 8 bits (adding 0.5/255 and
truncating) before PSNR, so a figure here is what a saved 8-bit PNG would score.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .engine import Deblurrer
from .errors import ImageError
from .images import DEFAULT_MAX_PIXELS, is_image_path, read_image
from .pixels import rgb8, to_tensor
from .settings import ProgressFn

# SSIM of Wang et al. (2004): 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, each RGB
# channel on its own and then averaged, 5 border pixels left out (the window's reach). The same
# numbers as skimage's structural_similarity(gaussian_weights=True, use_sample_covariance=False).
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class Pair:
    name: str
    blur: Path
    sharp: Path


@dataclass
class EvalRecord:
    """One pair: the deblurred image's scores and, for comparison, the blurry input's."""

    name: str
    width: int
    height: int
    psnr: float
    ssim: float
    blur_psnr: float
    blur_ssim: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EvalSummary:
    count: int
    psnr: float
    ssim: float
    blur_psnr: float
    blur_ssim: float

    @classmethod
    def of(cls, records: list[EvalRecord]) -> EvalSummary:
        """Means over images (the paper averages per image, not over all pixels)."""
        if not records:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(records),
            statistics.fmean(r.psnr for r in records),
            statistics.fmean(r.ssim for r in records),
            statistics.fmean(r.blur_psnr for r in records),
            statistics.fmean(r.blur_ssim for r in records),
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _images(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and is_image_path(p)}


def _file_pair(folder: Path) -> tuple[Path, Path] | None:
    """blur.EXT and sharp.EXT inside ``folder``, if both are there."""
    files = {p.stem.lower(): p for p in folder.iterdir() if p.is_file() and is_image_path(p)}
    if "blur" in files and "sharp" in files:
        return files["blur"], files["sharp"]
    return None


def _folder_pairs(blur: Path, sharp: Path, prefix: str) -> list[Pair]:
    b, s = _images(blur), _images(sharp)
    missing = sorted(set(b) - set(s))
    if missing:
        raise ImageError(
            f"{blur / missing[0]}: no sharp image of that name in {sharp}"
            + (f" ({len(missing)} blurry images lack one)" if len(missing) > 1 else ""),
            "every blur/NAME needs a sharp/NAME beside it",
        )
    return [Pair(f"{prefix}{name}", b[name], s[name]) for name in sorted(b)]


def find_pairs(root: str | os.PathLike[str]) -> list[Pair]:
    """Blurry/sharp pairs under ``root`` in any of the layouts in use:

    - GoPro: ``root/SEQUENCE/blur/NAME`` with ``root/SEQUENCE/sharp/NAME``
    - one sequence: ``root/blur/NAME`` with ``root/sharp/NAME``
    - one pair per folder: ``root/PAIR/blur.png`` with ``root/PAIR/sharp.png``

    Raises ImageError when ``root`` is not a folder, holds no pairs, or a blurry image has no
    sharp partner of the same name.
    """
    top = Path(root)
    if not top.is_dir():
        raise ImageError(f"{top}: not a folder", "pass a folder with blur/ and sharp/ images (GoPro layout)")
    if (top / "blur").is_dir() and (top / "sharp").is_dir():
        pairs = _folder_pairs(top / "blur", top / "sharp", "")
    elif pair := _file_pair(top):
        pairs = [Pair(top.name, *pair)]
    else:
        pairs = []
        for sub in sorted(p for p in top.iterdir() if p.is_dir()):
            if (sub / "blur").is_dir() and (sub / "sharp").is_dir():
                pairs += _folder_pairs(sub / "blur", sub / "sharp", f"{sub.name}/")
            elif pair := _file_pair(sub):
                pairs.append(Pair(sub.name, *pair))
    if not pairs:
        raise ImageError(
            f"{top}: no blurry/sharp pairs found",
            "use the GoPro layout: SEQUENCE/blur/NAME.png with SEQUENCE/sharp/NAME.png",
        )
    return pairs


def quantize(t: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) float -> (H,W,3) uint8 as the authors save it: clamp, add 0.5/255, truncate."""
    arr = t[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)
    return np.floor(arr * 255 + 0.5).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; inf for equal images."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gauss(x: np.ndarray) -> np.ndarray:
    size = 2 * SSIM_RADIUS + 1
    return cv2.GaussianBlur(x, (size, size), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean structural similarity of two (H,W) or (H,W,C) images, channels averaged.

    Raises ValueError when the shapes differ or a side is below 11 pixels.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels, got {a.shape}")
    x = a.astype(np.float64).reshape(*a.shape[:2], -1)
    y = b.astype(np.float64).reshape(*b.shape[:2], -1)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    r = SSIM_RADIUS
    scores = []
    for ch in range(x.shape[2]):
        xc, yc = x[:, :, ch], y[:, :, ch]
        mx, my = _gauss(xc), _gauss(yc)
        vx = _gauss(xc * xc) - mx * mx
        vy = _gauss(yc * yc) - my * my
        cxy = _gauss(xc * yc) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(float(s[r:-r, r:-r].mean()))
    return statistics.fmean(scores)


def evaluate_pair(pair: Pair, deblurrer: Deblurrer, max_pixels: int = DEFAULT_MAX_PIXELS) -> EvalRecord:
    """Deblur ``pair.blur`` and score it against ``pair.sharp``.

    Raises ImageError for an unreadable image or a blurry/sharp size mismatch.
    """
    blur = rgb8(read_image(pair.blur, max_pixels).pixels)
    sharp = rgb8(read_image(pair.sharp, max_pixels).pixels)
    if blur.shape != sharp.shape:
        raise ImageError(
            f"{pair.blur}: {blur.shape[1]}x{blur.shape[0]} but its sharp image is {sharp.shape[1]}x{sharp.shape[0]}",
            "pairs must have the same size",
        )
    t = time.perf_counter()
    outs, _tiles, _tile = deblurrer.run_tensor(to_tensor(blur))
    seconds = time.perf_counter() - t
    restored = quantize(outs[2])
    return EvalRecord(
        name=pair.name,
        width=blur.shape[1],
        height=blur.shape[0],
        psnr=psnr(restored, sharp),
        ssim=ssim(restored, sharp),
        blur_psnr=psnr(blur, sharp),
        blur_ssim=ssim(blur, sharp),
        seconds=seconds,
    )


def evaluate(
    pairs: list[Pair], deblurrer: Deblurrer, on_progress: ProgressFn | None = None
) -> Iterator[EvalRecord | ImageError]:
    """Score each pair in turn; a pair that cannot be read yields its ImageError and the rest go on."""
    for i, pair in enumerate(pairs):
        try:
            yield evaluate_pair(pair, deblurrer)
        except ImageError as e:
            yield e
        if on_progress:
            on_progress(i + 1, len(pairs))
