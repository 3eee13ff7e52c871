"""A folder of frames as a video source, and what opens either kind of source."""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from mimocli.errors import ImageError, VideoError
from mimocli.images import is_image_path, read_image

from .formats import SRGB_AS_VIDEO
from .options import VideoOptions
from .source import DEFAULT_FPS, Frame, Seek, VideoSource


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

    def decode(self, skip_below: int = 0, seek: Seek | None = None) -> Iterator[Frame]:
        """As VideoSource.decode; ``seek`` is never needed (a folder reads any frame directly)."""
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


Source: TypeAlias = VideoSource | FrameFolder  # what a run reads frames from


def open_source(path: Path, options: VideoOptions) -> Source:
    """A video file, or a folder of frames, as the run's source. Raises VideoError."""
    if path.is_dir():
        if options.start is not None or options.end is not None:
            raise VideoError(f"{path}: --start/--end need a video file", "cut the frame folder instead")
        return FrameFolder(path, options.fps)
    return VideoSource(path, options.start, options.end, options.repair, options.fps)


def no_frames(source: Source, options: VideoOptions) -> VideoError:
    where = ""
    if options.start is not None or options.end is not None:
        where = f" between {options.start or 0:g} s and {'the end' if options.end is None else f'{options.end:g} s'}"
    length = source.seconds if isinstance(source, VideoSource) else None
    long = f"; the video is {length:.2f} s long" if length is not None else ""
    return VideoError(f"{source.path}: no frames to deblur{where}{long}", "check --start and --end, and the file")


def natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]
