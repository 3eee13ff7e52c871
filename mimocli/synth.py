"""Synthetic motion blur: blurry/sharp training pairs made the way GoPro was, or from still photos
with random camera shake; never prints.

From video (Nah et al., CVPR 2017): a blurry frame is the mean of M consecutive sharp frames of a
high-frame-rate video, optionally averaged in linear light (through the inverse of a gamma
camera response), and its sharp target is the middle one of the M.

From stills: a random handheld-camera path over the exposure (pitch and yaw from Boracchi and
Foi's shake trajectory, "Modeling the performance of image restoration from motion blur", IEEE
TIP 2012, plus roll and a slight push), the photo warped by every pose and averaged, so the blur
varies across the frame as real shake does (mimocli.shake), plus optional noise and JPEG. The
uniform model (one kernel per photo: ``shake_kernel``, ``shake_blur``) stays available.

Pairs are written in the GoPro layout, OUT/blur/NAME.png and OUT/sharp/NAME.png, which
`mimo eval` (and training) read directly. Every file is written atomically.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .atomic import write_bytes_atomic
from .errors import ImageError, OutputError, VideoError
from .images import is_image_path, read_image, write_image
from .settings import ProgressFn
from .shake import SPLITS, Shake, ShakeModel, camera_path, shake_region, splat, split_of
from .video import VideoOptions, open_source


@dataclass(frozen=True)
class AverageOptions:
    """``frames``: M, odd, so that one frame is the middle. ``stride``: frames from one window's
    start to the next (default M: windows do not share frames). ``gamma``: with ``linear``, the
    camera response is taken as x ** (1/gamma) and inverted before averaging."""

    frames: int = 7
    stride: int | None = None
    linear: bool = False
    gamma: float = 2.2
    limit: int | None = None  # at most this many pairs


@dataclass(frozen=True)
class ShakeOptions:
    """``kernel``: the longest blur in pixels (the camera path's length; also the side of the
    kernel image written per photo). ``exposure``: the part of the path the shutter sees, 0..1.
    ``roll``: degrees the camera turns about its axis at most (0: uniform blur across the photo).
    ``noise``: standard deviation of Gaussian noise, in 8-bit levels. ``jpeg``: quality of a JPEG
    round trip of the blurry image (0: none). ``vary``: draw each photo's blur length (4 px up to
    ``kernel``), roll, exposure, linear light, noise and JPEG at random instead (the held-out test
    set is made so). ``split``: only the photos of this split (mimocli.shake.split_of)."""

    kernel: int = 31
    exposure: float = 1.0
    anxiety: float = 0.005  # how restless the shake is (Boracchi and Foi's default)
    noise: float = 0.0
    jpeg: int = 0
    linear: bool = False
    gamma: float = 2.2
    seed: int = 0
    roll: float = 1.0
    vary: bool = False
    split: str | None = None

    def model(self) -> ShakeModel:
        """The distribution each photo's blur is drawn from."""
        longest = float(max(self.kernel - 1, 1))
        if self.vary:
            return replace(ShakeModel.test(), length=(min(4.0, longest), longest), roll=self.roll)
        return ShakeModel(
            sharp=0.0,
            weak=0.0,
            length=(longest, longest),
            anxiety=self.anxiety,
            roll=self.roll,
            exposure=(self.exposure, self.exposure),
            linear=1.0 if self.linear else 0.0,
            gamma=(self.gamma, self.gamma),
            noise=1.0 if self.noise > 0 else 0.0,
            noise_sigma=(self.noise, self.noise),
            jpeg=1.0 if self.jpeg else 0.0,
            jpeg_quality=(self.jpeg, self.jpeg),
            scale=(1.0, 1.0),
        )


@dataclass
class SynthSummary:
    input: str
    output: str
    pairs: int = 0
    skipped: int = 0  # existing pairs kept (resume) or unreadable stills
    names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _max(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max)


def average_frames(frames: list[np.ndarray], linear: bool = False, gamma: float = 2.2) -> np.ndarray:
    """The mean of equally sized uint8/uint16 frames, rounded half to even, in their dtype.

    With ``linear``: each frame is taken to linear light as (x / max) ** gamma, averaged, and
    brought back with ** (1 / gamma). Raises ValueError for no frames or mixed shapes/dtypes.
    """
    if not frames:
        raise ValueError("no frames to average")
    first = frames[0]
    if any(f.shape != first.shape or f.dtype != first.dtype for f in frames):
        raise ValueError("frames differ in size or bit depth")
    peak = _max(first.dtype)
    if linear:
        acc = np.zeros(first.shape, dtype=np.float64)
        for f in frames:
            acc += (f.astype(np.float64) / peak) ** gamma
        out = (acc / len(frames)) ** (1 / gamma) * peak
    else:
        total = np.zeros(first.shape, dtype=np.int64)
        for f in frames:
            total += f
        out = total / len(frames)
    return np.rint(out).astype(first.dtype)


def _pair_paths(out: Path, name: str) -> tuple[Path, Path]:
    return out / "blur" / f"{name}.png", out / "sharp" / f"{name}.png"


def _prepare(out: Path, overwrite: bool, resume: bool) -> None:
    """Raises OutputError when ``out`` holds pairs and neither ``overwrite`` nor ``resume`` is set."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder", "choose a folder name for the pairs")
    existing = out.is_dir() and any((out / "blur").glob("*.png"))
    if existing and not (overwrite or resume):
        raise OutputError(f"{out}: already holds pairs", "pass --resume to add the missing ones or --overwrite")
    (out / "blur").mkdir(parents=True, exist_ok=True)
    (out / "sharp").mkdir(parents=True, exist_ok=True)


def synth_from_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: AverageOptions = AverageOptions(),  # noqa: B008  (frozen)
    overwrite: bool = False,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
) -> SynthSummary:
    """Average windows of M frames of a video file (or a folder of frames) into blurry/sharp pairs.

    Pair k uses frames [k*stride, k*stride + M); its blurry image is their average and its sharp
    image is frame k*stride + M//2. Pairs are named by that middle frame's index (000003.png).
    Raises VideoError for a bad input, ValueError for bad options, OutputError for the output.
    """
    m = options.frames
    if m < 1 or m % 2 == 0:
        raise ValueError(f"frames must be odd and positive (so one is the middle), not {m}")
    stride = options.stride or m
    if stride < 1:
        raise ValueError(f"stride must be positive, not {stride}")
    src, out = Path(input), Path(output)
    source = open_source(src, VideoOptions())
    summary = SynthSummary(str(src), str(out))
    try:
        _prepare(out, overwrite, resume)
        total = source.total
        pairs_total = None if total is None else max(0, (total - m) // stride + 1)
        if options.limit is not None and pairs_total is not None:
            pairs_total = min(pairs_total, options.limit)
        window: list[np.ndarray] = []
        first_index = 0  # frame index of window[0]
        for frame in source.decode():
            assert frame.pixels is not None
            if frame.index < first_index:
                continue
            window.append(frame.pixels)
            if len(window) < m:
                continue
            name = f"{first_index + m // 2:06d}"
            blur_path, sharp_path = _pair_paths(out, name)
            if resume and blur_path.exists() and sharp_path.exists():
                summary.skipped += 1
            else:
                write_image(sharp_path, window[m // 2])
                write_image(blur_path, average_frames(window, options.linear, options.gamma))
                summary.pairs += 1
            summary.names.append(name)
            if on_progress:
                on_progress(len(summary.names), pairs_total)
            if options.limit is not None and len(summary.names) >= options.limit:
                break
            first_index += stride
            window = window[stride:] if stride < m else []
    finally:
        source.close()
    if not summary.names:
        raise VideoError(f"{src}: fewer than {m} frames", f"use a longer video or fewer --frames than {m}")
    return summary


# -- still photos ----------------------------------------------------------------------------
def shake_trajectory(rng: np.random.Generator, length: float, anxiety: float = 0.005, points: int = 2000) -> np.ndarray:
    """(points, 2) positions in pixels of a random camera-shake path of total ``length`` pixels:
    ``mimocli.shake.camera_path`` at Boracchi and Foi's 2000 points."""
    return camera_path(rng, length, anxiety, points)


def shake_kernel(trajectory: np.ndarray, size: int, exposure: float = 1.0) -> np.ndarray:
    """A (size, size) float64 kernel summing to 1: the first ``exposure`` of the path, centred in
    the kernel and splatted with bilinear weights, so that every point of the path counts alike.
    A path wider than the kernel is scaled down to fit."""
    if size < 1:
        raise ValueError(f"kernel size must be positive, not {size}")
    n = max(1, math.ceil(len(trajectory) * min(max(exposure, 0.0), 1.0)))
    pts = trajectory[:n].astype(np.float64)
    pts = pts - pts.min(axis=0)
    extent = float(pts.max())
    if extent > size - 1:
        pts *= (size - 1) / extent
    pts += ((size - 1) - pts.max(axis=0)) / 2  # centre the path
    return splat(pts, size)  # inside the kernel by construction: no weight is lost


def shake_blur(image: np.ndarray, kernel: np.ndarray, linear: bool = False, gamma: float = 2.2) -> np.ndarray:
    """Convolve an (H,W[,C]) uint8/uint16 image with ``kernel`` (reflected borders), optionally in
    linear light; rounded back to the image's dtype."""
    peak = _max(image.dtype)
    x = image.astype(np.float64) / peak
    if linear:
        x = x**gamma
    # filter2D correlates; flipping the kernel makes it a convolution
    y = cv2.filter2D(x, -1, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)
    if y.ndim < image.ndim:
        y = y[..., None]
    if linear:
        y = np.clip(y, 0, None) ** (1 / gamma)
    return np.rint(np.clip(y, 0, 1) * peak).astype(image.dtype)


def _image_seed(seed: int, name: str) -> int:
    """A seed per image from the run's seed and the file name: the same photo always gets the
    same shake, whatever else is in the folder."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) & 0xFFFFFFFF


def _stills(inputs: list[Path]) -> Iterator[Path]:
    """Files as given; folders descended into (a dataset is often a folder of folders)."""
    for p in inputs:
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file() and is_image_path(q))
        else:
            yield p


def shake_record(shake: Shake) -> dict[str, object]:
    """What a pair's blur was, for breaking results down by it: the camera path's length in pixels,
    the roll in degrees, the poses averaged, whether in linear light, the noise in 8-bit levels and
    the JPEG quality (0: none)."""
    return {
        "length": round(shake.length, 3),
        "roll": round(shake.roll, 4),
        "samples": shake.samples,
        "linear": shake.linear,
        "noise": round(shake.noise, 3),
        "jpeg": shake.jpeg,
    }


def synth_from_stills(
    inputs: list[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    options: ShakeOptions = ShakeOptions(),  # noqa: B008  (frozen)
    overwrite: bool = False,
    resume: bool = False,
    on_progress: ProgressFn | None = None,
    on_error: Callable[[ImageError], None] | None = None,
) -> SynthSummary:
    """Blur sharp photos (files or folders of them, descended into) with random camera shake into
    pairs named after the photos; the blur kernel at each photo's centre goes to OUT/kernel/NAME.png
    (scaled to its peak) and what was drawn (``shake_record``) to OUT/kernel/NAME.json.

    An unreadable photo is handed to ``on_error`` and skipped (raised when there is none).
    Raises ValueError for bad options, OutputError for the output, ImageError when no photo is found.
    """
    if options.kernel < 3:
        raise ValueError(f"kernel must be at least 3 pixels, not {options.kernel}")
    if not 0 < options.exposure <= 1:
        raise ValueError(f"exposure must be in (0, 1], not {options.exposure}")
    if not 0 <= options.jpeg <= 100:
        raise ValueError(f"jpeg quality must be 0..100, not {options.jpeg}")
    if options.split is not None and options.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {options.split!r}")
    for p in map(Path, inputs):
        if not p.exists():
            raise ImageError(f"{p}: no such file or folder", "pass sharp photos or folders of them")
    paths = list(_stills([Path(p) for p in inputs]))
    if not paths:
        raise ImageError(f"{', '.join(str(p) for p in inputs)}: holds no images", "pass photos or folders of photos")
    if options.split is not None:
        paths = [p for p in paths if split_of(p) == options.split]
        if not paths:
            raise ImageError(
                f"{', '.join(map(str, inputs))}: no photos in the {options.split} split", "pass more photos"
            )
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise ImageError(
                f"{path}: has the same name as {seen[path.stem]}, and pairs are named after their photo",
                "rename one of them or synthesize them into separate folders",
            )
        seen[path.stem] = path
    out = Path(output)
    model = options.model()
    _prepare(out, overwrite, resume)
    (out / "kernel").mkdir(exist_ok=True)
    summary = SynthSummary(", ".join(str(p) for p in inputs), str(out))
    for i, path in enumerate(paths):
        name = path.stem
        blur_path, sharp_path = _pair_paths(out, name)
        if resume and blur_path.exists() and sharp_path.exists():
            summary.skipped += 1
        else:
            try:
                sharp = read_image(path).pixels
            except ImageError as e:
                if on_error is None:
                    raise
                on_error(e)
                summary.skipped += 1
                continue
            if sharp.ndim == 3 and sharp.shape[2] in (2, 4):
                sharp = sharp[..., :-1]  # alpha does not blur; pairs are colour only
            rng = np.random.default_rng(_image_seed(options.seed, name))
            blur, sharp, shake = shake_region(sharp, rng, model)
            h, w = sharp.shape[:2]
            kernel = shake.psf((w - 1) / 2, (h - 1) / 2, options.kernel)
            write_image(sharp_path, sharp)
            peak = kernel.max() or 1.0
            write_image(out / "kernel" / f"{name}.png", np.rint(kernel / peak * 255).astype(np.uint8))
            record = json.dumps(shake_record(shake), indent=1) + "\n"
            write_bytes_atomic(out / "kernel" / f"{name}.json", record.encode())
            write_image(blur_path, blur)
            summary.pairs += 1
        summary.names.append(name)
        if on_progress:
            on_progress(i + 1, len(paths))
    return summary
