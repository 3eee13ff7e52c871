"""Pixel formats and colour: the planes and depth of a format, the colour tags of a stream, and
the swscale settings that turn frames into RGB and back without drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import av
import numpy as np

# FFmpeg's AVColorSpace -> swscale's SWS_CS_* (what VideoFrame.reformat takes)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_UNSPECIFIED = 2


YUVA8 = ("yuva420p", "yuva422p", "yuva444p")  # 8-bit formats whose 4th plane is the alpha


def alpha_view(frame: Any) -> np.ndarray:
    """The alpha plane of an 8-bit YUVA frame as a writable (H,W) view into the frame."""
    plane = frame.planes[3]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def has_alpha(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    return not fmt.has_palette and (len(fmt.components) == 4 or fmt.name.startswith(("ya", "yuva")))


_BT709, _SMPTE170M = 1, 6  # matrices (AVCOL_SPC_*) written for an untagged input: HD, SD


_RANGE_MPEG, _RANGE_JPEG = 1, 2
# Accurate rounding and full-resolution chroma: with these, YUV -> RGB -> YUV gives back the luma
# plane exactly and no colour drifts (swscale's fast default shifts the mean by about 1 level).


SWS_FLAGS = (
    av.video.reformatter.Interpolation.BICUBIC
    | av.video.reformatter.Interpolation.ACCURATE_RND
    | av.video.reformatter.Interpolation.FULL_CHR_H_INT
    | av.video.reformatter.Interpolation.FULL_CHR_H_INP
)


@dataclass(frozen=True)
class Colour:
    """The YUV <-> RGB conversion of a stream and the tags it carries (FFmpeg enum values)."""

    matrix: int
    range: int
    primaries: int
    trc: int

    @classmethod
    def of(cls, ctx: Any) -> Colour:
        return cls(int(ctx.colorspace), int(ctx.color_range), int(ctx.color_primaries), int(ctx.color_trc))

    def filled(self, decoded: Callable[[], Colour | None]) -> Colour:
        """These tags, with those left unspecified taken from ``decoded()`` (what the decoder
        says of a frame), which is asked only when one is missing."""
        if self.matrix in _SWS_MATRIX and self.range in (_RANGE_MPEG, _RANGE_JPEG):
            return self
        frame = decoded()
        if frame is None:
            return self
        return Colour(
            self.matrix if self.matrix != _UNSPECIFIED else frame.matrix,
            self.range if self.range in (_RANGE_MPEG, _RANGE_JPEG) else frame.range,
            self.primaries if self.primaries != _UNSPECIFIED else frame.primaries,
            self.trc if self.trc != _UNSPECIFIED else frame.trc,
        )

    def sws_matrix(self, width: int, height: int) -> int:
        if self.matrix in _SWS_MATRIX:
            return _SWS_MATRIX[self.matrix]
        return 1 if width >= 1280 or height >= 720 else 5  # untagged: what players assume

    def sws_range(self, pix_fmt: str) -> int:
        if self.range in (_RANGE_MPEG, _RANGE_JPEG):
            return self.range
        return _RANGE_JPEG if pix_fmt.startswith("yuvj") else _RANGE_MPEG

    def tagged(self, width: int, height: int, pix_fmt: str) -> Colour:
        """These tags, with an unset matrix and range replaced by the ones the conversion uses,
        so that no player has to guess them (an untagged SD VP8 read as BT.709 shifts colours)."""
        matrix = self.matrix
        if matrix not in _SWS_MATRIX:
            matrix = _BT709 if self.sws_matrix(width, height) == 1 else _SMPTE170M
        return replace(self, matrix=matrix, range=self.sws_range(pix_fmt))


SRGB_AS_VIDEO = Colour(matrix=1, range=_RANGE_MPEG, primaries=1, trc=13)  # frame folders: sRGB in BT.709


def bits(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def chroma(pix_fmt: str) -> tuple[int, int]:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    if fmt.is_rgb or len(fmt.components) < 3:
        return (16, 16)
    return (fmt.components[1].width, fmt.components[1].height)


def even_size(pix_fmt: str, width: int, height: int) -> bool:
    fmt = av.VideoFormat(pix_fmt, width, height)
    if fmt.is_rgb or len(fmt.components) < 3:
        return True
    cw, ch = chroma(pix_fmt)
    return (width % (16 // cw) == 0) and (height % (16 // ch) == 0)
