"""Folders of frames: a folder of images read as a video, and PNG frames written out (--frames)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mimocli.errors import ImageError, OutputError, VideoError
from mimocli.images import is_image_path, read_image, write_image

from .encoding import SCALE_NAMES, scale_path
from .formats import SRGB_AS_VIDEO
from .options import VideoRun
from .pipeline import run_pipeline
from .source import DEFAULT_FPS, Frame, Seek, no_frames

if TYPE_CHECKING:
    from .source import Source


class FrameFolder:
    """A folder of images, in natural order, as a video at ``rate`` frames per second."""

    def __init__(self, path: Path, rate: Fraction | None = None):
        self.path = path
        self.files = sorted((p for p in path.iterdir() if p.is_file() and is_image_path(p)), key=natural_key)
        if not self.files:
            raise VideoError(f"{path}: holds no image files", "pass a folder of frames (PNG, JPEG, TIFF...)")
        self.rate = Fraction(rate or DEFAULT_FPS)
        self.time_base = 1 / self.rate
        first = self._read(self.files[0])
        self.height, self.width = first.shape[:2]
        self.deep = first.dtype == np.uint16
        self.pix_fmt = "yuv420p10le" if self.deep else "yuv420p"
        self.colour = SRGB_AS_VIDEO
        self.sar = None
        self.start = self.end = None
        self.shift = 0

    @property
    def total(self) -> int:
        return len(self.files)

    def close(self) -> None:
        pass

    def frames(self, skip_below: int = 0, seek: Seek | None = None) -> Iterator[Frame]:
        """As VideoSource.frames; ``seek`` is never needed (a folder reads any frame directly)."""
        for i, f in enumerate(self.files):
            if i < skip_below:
                yield Frame(i, i, 1, None)
                continue
            px = self._read(f)
            if px.shape[:2] != (self.height, self.width):
                raise VideoError(
                    f"{f}: is {px.shape[1]}x{px.shape[0]}, not {self.width}x{self.height} like the first frame",
                    "all frames of a video must have one size",
                )
            if (px.dtype == np.uint16) != self.deep:
                px = (px.astype(np.uint32) * 257).astype(np.uint16) if self.deep else (px >> 8).astype(np.uint8)
            yield Frame(i, i, 1, px)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        try:
            px = read_image(path).pixels
        except ImageError as e:
            raise VideoError(e.message, e.hint) from None
        if px.ndim == 2:
            px = px[:, :, None]
        if px.shape[2] in (2, 4):
            px = px[:, :, :-1]  # video has no alpha
        if px.shape[2] == 1:
            px = np.repeat(px, 3, axis=2)
        if px.dtype not in (np.uint8, np.uint16):
            px = np.rint(np.clip(px, 0, 1) * 65535).astype(np.uint16)
        return np.ascontiguousarray(px)


# -- frames out --------------------------------------------------------------------------------


def natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _frame_name(source: Source, index: int) -> str:
    if isinstance(source, FrameFolder):
        return source.files[index].stem + ".png"
    return f"frame_{index + 1:06d}.png"


class _FrameWriter:
    def __init__(self, source: Source, folders: list[Path]):
        self.source, self.folders = source, folders

    def add(self, frame: Frame, images: dict[int, np.ndarray]) -> None:
        """``images``: the outputs by divisor (1: full size, 2, 4)."""
        name = _frame_name(self.source, frame.index)
        for k, folder in enumerate(self.folders):
            s = 2**k
            img = images[s]
            if frame.alpha is not None:  # RGBA PNG: the transparency as it came
                img = np.dstack([img, frame.alpha[::s, ::s][: img.shape[0], : img.shape[1]]])
            write_image(folder / name, img)

    def close(self) -> None:
        pass


def run_frames(run: VideoRun) -> None:
    """Frames out: one PNG per frame, each written atomically, so a rerun with resume skips the
    frames already there."""
    source, out_path, options, summary = run.source, run.output, run.options, run.summary
    summary.codec = "png"
    folders = [out_path] + ([scale_path(out_path, s, True) for s in SCALE_NAMES] if options.save_scales else [])
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a folder", "choose a folder name for --frames output")
        existing = folder.is_dir() and any(folder.glob("*.png"))
        if existing and not (options.resume or options.overwrite):
            raise OutputError(
                f"{folder}: already holds frames", "pass --resume to continue, or --overwrite to replace them"
            )
        folder.mkdir(parents=True, exist_ok=True)
    deblurrer = run.settle()
    skip = 0
    if options.resume:
        # Each frame is written atomically: continue after the frames present in every folder.
        names = [{p.name for p in folder.glob("*.png")} for folder in folders]
        total = source.total
        while (total is None or skip < total) and all(_frame_name(source, skip) in n for n in names):
            skip += 1
        if deblurrer.config.batch > 1:
            skip -= skip % options.checkpoint  # batch the rest as an uninterrupted run does
    summary.resumed = skip
    writer = _FrameWriter(source, folders)
    run_pipeline(run, skip, writer)
    if not summary.resumed + summary.deblurred:
        raise no_frames(source, options)
    for s, folder in zip(SCALE_NAMES, folders[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(folder)
