"""Videos with PyAV, in process: decode, deblur frame by frame, encode, and keep everything else.

Colour: frames are turned into RGB with the stream's own matrix and range (an untagged stream is
read as BT.709 from 720p up and BT.601 below, as players do), and turned back with the same ones;
the output carries the input's colour tags. Timing: every frame keeps its own timestamp and
duration, so variable frame rate stays in sync. Every audio, subtitle, data and attachment stream
is copied packet for packet, with the container's and streams' metadata, dispositions, chapters
and the display matrix (rotation).

Throughput: three threads joined by bounded queues, the decoder (demux, decode, YUV -> RGB), the
caller's thread (inference, in batches) and the encoder (RGB -> YUV, encode), so the processor
running the network never waits for a codec.

Nothing lost: frames are encoded in segments of ``checkpoint`` frames, each by a fresh encoder
(so each starts on a keyframe) into a packet file in a work folder beside the output
(``.NAME.mimo-partial``), renamed into place once complete. The output is muxed from those
packets and the input's other streams under a temporary name and renamed at the end. An
interrupted run keeps the work folder; ``resume`` reuses its complete segments. An uninterrupted
run is cut into the same segments and batches, so a resumed output holds the same frames (and,
with a deterministic encoder such as FFV1, the same bytes: x264 can vary a fresh encoder's first
packet for identical input).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import json
import os
import queue
import re
import shutil
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.packet import PacketSideData, packet_sidedata_type_from_literal

from .atomic import atomic_write, remove_stale_parts, write_bytes_atomic
from .engine import Deblurrer, choose_tile
from .errors import ImageError, OutputError, VideoError
from .images import is_image_path, read_image, write_image
from .settings import DEFAULT_CHECKPOINT
from .tiling import round_up

ProgressFn = Callable[[int, int | None], None]

FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
CODEC_ALIASES = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "prores": "prores_ks",
}
# Near-transparent quality by default: deblurring adds fine detail that a higher CRF smears away.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 26}
DEFAULT_FPS = Fraction(25)  # frame folders, as FFmpeg's image2 demuxer assumes
SCALE_NAMES = {0.5: "x0.5", 0.25: "x0.25"}

# FFmpeg's AVColorSpace -> swscale's SWS_CS_* (what VideoFrame.reformat takes)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_UNSPECIFIED = 2
_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}  # decoders that read WebM's alpha side stream


_YUVA8 = ("yuva420p", "yuva422p", "yuva444p")  # 8-bit formats whose 4th plane is the alpha


def _alpha_view(frame: Any) -> np.ndarray:
    """The alpha plane of an 8-bit YUVA frame as a writable (H,W) view into the frame."""
    plane = frame.planes[3]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def _has_alpha(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    return not fmt.has_palette and (len(fmt.components) == 4 or fmt.name.startswith(("ya", "yuva")))


# Demuxers of raw elementary streams, which stamp frames at a default rate.
RAW_VIDEO_FORMATS = frozenset(("h264", "hevc", "vvc", "mpegvideo", "m4v", "cavsvideo", "avs2", "avs3", "vc1", "obu"))
_BT709, _SMPTE170M = 1, 6  # matrices (AVCOL_SPC_*) written for an untagged input: HD, SD
_RANGE_MPEG, _RANGE_JPEG = 1, 2
# Accurate rounding and full-resolution chroma: with these, YUV -> RGB -> YUV gives back the luma
# plane exactly and no colour drifts (swscale's fast default shifts the mean by about 1 level).
_SWS_FLAGS = (
    av.video.reformatter.Interpolation.BICUBIC
    | av.video.reformatter.Interpolation.ACCURATE_RND
    | av.video.reformatter.Interpolation.FULL_CHR_H_INT
    | av.video.reformatter.Interpolation.FULL_CHR_H_INP
)
_GLOBAL_HEADER_FORMAT = 0x0040  # AVFMT_GLOBALHEADER
_GLOBAL_HEADER_CODEC = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER


# -- what a run does ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoOptions:
    """How to encode and what to process. None means: from the input or the output's extension."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    batch: int = 1
    start: float | None = None  # seconds
    end: float | None = None  # seconds, exclusive
    save_scales: bool = False
    frames: bool = False  # write a folder of PNG frames instead of a video
    fps: Fraction | None = None  # frame rate of a frame-folder input
    checkpoint: int = DEFAULT_CHECKPOINT
    resume: bool = False
    overwrite: bool = False
    repair: bool = False  # replace undecodable frames by the previous one instead of failing
    encoder_threads: int | None = None  # None: 1 when inference runs on the CPU, else 0 (FFmpeg's choice)


@dataclass
class VideoSummary:
    input: str
    output: str
    frames: int = 0  # in the output
    deblurred: int = 0  # this run
    resumed: int = 0  # reused from an interrupted run
    repaired: int = 0  # undecodable frames replaced by the previous one
    missing: int = 0  # frames the file's header promises after the point where it is cut short
    width: int = 0
    height: int = 0
    codec: str = ""
    pix_fmt: str = ""
    streams_copied: int = 0
    seconds: float = 0.0
    fps: float = 0.0  # deblurred frames per second of this run, end to end
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0
    scales: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


@dataclass
class Frame:
    index: int  # position in the processed range, from 0
    pts: int  # output timestamp in the source's time base
    duration: int
    pixels: np.ndarray | None  # (H,W,3) uint8 or uint16; None for frames an earlier run did
    repaired: bool = False
    alpha: np.ndarray | None = None  # (H,W) of the pixels' dtype: transparency, passed through untouched


# -- sources -----------------------------------------------------------------------------------
class VideoSource:
    """A video file's first video stream, decoded to RGB frames. Raises VideoError on bad input."""

    def __init__(
        self,
        path: Path,
        start: float | None = None,
        end: float | None = None,
        repair: bool = False,
        fps: Fraction | None = None,
    ):
        self.path = path
        self.start, self.end, self.repair = start, end, repair
        self.container = open_input(path)
        streams = [s for s in self.container.streams.video if not _is_cover(s)]
        if not streams:
            self.container.close()
            raise VideoError(f"{path}: has no video stream", "pass a video file, or a folder of frames")
        self.stream = streams[0]
        ctx = self.stream.codec_context
        if ctx is None or not ctx.is_decoder:
            self.container.close()
            raise VideoError(f"{path}: its video codec cannot be decoded by this FFmpeg", "convert it to H.264 first")
        # Frame threads decode faster but report a damaged packet a few packets late, which
        # would put a repaired frame at the wrong time: with --repair, slice threads only.
        self.stream.thread_type = "SLICE" if repair else "AUTO"
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 90000)
        self.width, self.height = ctx.width, ctx.height
        self.pix_fmt = ctx.format.name if ctx.format is not None else "yuv420p"
        self.rate = Fraction(self.stream.average_rate or self.stream.guessed_rate or DEFAULT_FPS)
        # A raw elementary stream (.h264, .h265) has no container timestamps: the demuxer stamps
        # it at a default 25 fps. Its frames are restamped at the rate it carries itself.
        self.restamp: Fraction | None = None  # the demuxer's stamping rate, when restamped
        if set(self.container.format.name.split(",")) & RAW_VIDEO_FORMATS:
            self.restamp = self.rate
            self.rate = self._raw_rate(ctx, fps)
            self.demux_time_base, self.time_base = self.time_base, 1 / self.rate
        elif fps is not None:
            warnings.warn(f"{path}: --fps is ignored: the container times every frame itself", UserWarning, 2)
        self.colour = Colour.of(ctx)
        sar = self.stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        self.sar: Fraction | None = Fraction(sar) if sar and sar != 1 else None
        if self.width <= 0 or self.height <= 0:
            self.container.close()
            raise VideoError(f"{path}: the video stream has no picture size", "the file may be damaged")
        # Transparency: in the pixel format, or (VP8/VP9 in WebM) in a side stream that only
        # libvpx's decoders read; FFmpeg's own would return opaque frames.
        self.decoder: Any = None
        if self.stream.metadata.get("alpha_mode") == "1" and ctx.name in _ALPHA_DECODERS:
            self.decoder = av.CodecContext.create(_ALPHA_DECODERS[ctx.name], "r")
            self.pix_fmt = "yuva420p"
        self.alpha = _has_alpha(self.pix_fmt)
        self.deep = _bits(self.pix_fmt) > 8
        self.shift = 0  # subtracted from every timestamp: the first frame's time with --start
        self.display_matrix: list[int] | None = None  # rotation/flip, from the first decoded frame
        self.missing = 0  # frames the header promises past a cut (set when the packets run out)
        first = float(self.stream.start_time * self.time_base) if self.stream.start_time is not None else 0.0
        if start is not None and start <= first + 1e-6 and not self.restamp:
            self.start = None  # from the first frame on: the same as no --start, priming and all
        header_end = self._header_end()
        if start is not None and header_end is not None and start >= float(header_end * self.time_base):
            length = self.seconds or 0.0
            self.container.close()
            raise VideoError(
                f"{path}: --start {start:g} s is at or past the end of the video, which is {length:.2f} s long",
                "pick an earlier --start",
            )

    def _raw_rate(self, ctx: Any, fps: Fraction | None) -> Fraction:
        """The frame rate of a raw stream: ``fps`` if given, else the one its headers carry
        (H.264/HEVC VUI timing), else 25, with a warning that says which was used."""
        carried = Fraction(ctx.framerate) if ctx.framerate and ctx.framerate > 0 else None
        if fps is not None:
            if carried is not None and carried != fps:
                warnings.warn(
                    f"{self.path}: --fps {float(fps):g} overrides the {float(carried):.3f} fps the stream carries",
                    UserWarning,
                    3,
                )
            return fps
        if carried is None:
            warnings.warn(
                f"{self.path}: the raw stream carries no frame rate; {DEFAULT_FPS} fps is assumed "
                "(pass --fps to set it)",
                UserWarning,
                3,
            )
            return Fraction(DEFAULT_FPS)
        return carried

    @property
    def seconds(self) -> float | None:
        """The video stream's length by the container's header (None: unknown)."""
        s = self.stream
        if s.duration:
            return float(s.duration * self.time_base)
        return float(self.container.duration / av.time_base) if self.container.duration else None

    def _header_end(self) -> int | None:
        """Where the video stream ends by the header, in time-base units (None: unknown)."""
        s = self.stream
        if not s.duration:
            return None
        return int(s.duration) + int(s.start_time or 0)

    @property
    def total(self) -> int | None:
        """Frames in the processed range, estimated from the container (None: unknown)."""
        n = self.stream.frames
        duration = float(self.container.duration / av.time_base) if self.container.duration else None
        if not n and duration:
            n = round(duration * self.rate)
        if not n:
            return None
        if self.start is not None or self.end is not None:
            first = self.start or 0.0
            last = self.end if self.end is not None else (duration or n / self.rate)
            n = max(0, round((min(last, duration or last) - first) * self.rate))
        return int(n)

    def close(self) -> None:
        self.container.close()

    def frames(self, skip_below: int = 0) -> Iterator[Frame]:
        """Frames in presentation order, RGB uint8 (uint16 for deeper sources).

        Frames with index < skip_below come without pixels (an earlier run did them).
        An undecodable packet raises VideoError, or with ``repair`` becomes a copy of the
        previous frame at the packet's timestamp, so the frame count and timing stay intact.
        """
        tb = self.demux_time_base if self.restamp else self.time_base  # the packets' own
        if self.start and not self.restamp:  # a raw stream cannot seek by time: it is read from the start
            self.container.seek(int(self.start / tb), stream=self.stream, backward=True, any_frame=False)
        lost: list[int] = []  # timestamps of undecodable packets, as a heap
        state: dict[str, Any] = {"index": 0, "last": None, "prev": None, "first": None, "n": 0}
        default_duration = max(1, round(1 / (self.rate * tb)))
        self.missing = 0
        restamp = self.restamp

        def emit(
            pts: int | None, duration: int, pixels: Callable[[], np.ndarray] | None, repaired: bool
        ) -> Frame | None:
            if pts is None:
                pts = state["last"] + default_duration if state["last"] is not None else 0
            state["last"] = pts
            if restamp is not None:  # frames come in presentation order: number them, in a 1/rate time base
                pts, duration = state["n"], 1
                state["n"] += 1
            t = float(pts * self.time_base)
            if self.start is not None and t < self.start - 1e-6:
                return None
            if self.end is not None and t >= self.end - 1e-6:
                raise StopIteration
            if state["first"] is None:
                state["first"] = pts
                if self.start is not None:
                    self.shift = pts
            i = state["index"]
            state["index"] += 1
            px = None if i < skip_below or pixels is None else pixels()
            alpha = None
            if px is not None and px.shape[2] == 4:
                px, alpha = np.ascontiguousarray(px[:, :, :3]), np.ascontiguousarray(px[:, :, 3])
            return Frame(i, pts - self.shift, duration or (1 if restamp else default_duration), px, repaired, alpha)

        def decoded() -> Iterator[tuple[int | None, int, Any, bool]]:
            end = None  # where the packets read so far end, in time-base units
            for packet in self._demux():
                if packet.size and packet.pts is not None:
                    end = max(end or 0, packet.pts + (packet.duration or default_duration))
                when = f"{float(packet.pts * tb):.3f} s" if packet.pts is not None else "an unknown time"
                if packet.is_corrupt and not self.repair:
                    # The demuxer knows a packet is damaged (cut short, say) where a decoder
                    # may conceal it or drop frames without a word.
                    raise VideoError(
                        f"{self.path}: damaged video packet near {when} (the file is cut short or corrupt)",
                        "pass --repair to keep what can be decoded; add --resume to reuse the frames done",
                    )
                try:
                    if self.decoder is None:
                        out = packet.decode()
                    else:
                        out = self.decoder.decode(packet if packet.size else None)
                except av.error.EOFError:
                    return
                except av.error.FFmpegError as e:
                    if not self.repair or packet.pts is None:
                        raise VideoError(
                            f"{self.path}: corrupt video packet near {when} ({e.strerror or e})",
                            "pass --repair to replace undecodable frames with the previous frame",
                        ) from None
                    heapq.heappush(lost, packet.pts)
                    continue
                for f in out:
                    while lost and (f.pts is None or lost[0] < f.pts):
                        yield lost[0], 0, None, True
                        heapq.heappop(lost)
                    yield f.pts, int(f.duration or 0), f, False
            while lost:
                yield heapq.heappop(lost), 0, None, True
            self._check_length(end, default_duration)

        for pts, duration, f, repaired in decoded():
            if f is not None:
                if (f.width, f.height) != (self.width, self.height):
                    raise VideoError(
                        f"{self.path}: the picture size changes from {self.width}x{self.height} to "
                        f"{f.width}x{f.height} at {float((pts or 0) * tb):.3f} s",
                        "split the video where the size changes",
                    )
                if state["prev"] is None:
                    self.display_matrix = _display_matrix(f)
                state["prev"] = f

            def pixels(f: Any = f) -> np.ndarray:
                src = f if f is not None else state["prev"]
                if src is None:
                    raise VideoError(f"{self.path}: the first frame cannot be decoded", "the file is damaged")
                return self.to_rgb(src)

            try:
                frame = emit(pts, duration, pixels, repaired)
            except StopIteration:
                return
            if frame is not None:
                yield frame

    def _demux(self) -> Iterator[Any]:
        """The video stream's packets; a demuxer failure (a damaged container) is a VideoError."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as e:
                if self.repair:
                    return  # keep what came before the damage; the length check reports the rest
                raise VideoError(
                    f"{self.path}: the container is damaged ({e.strerror or e})",
                    "pass --repair to keep what can be read",
                ) from None
            yield packet

    def _check_length(self, end: int | None, frame: int) -> None:
        """After the last packet: a file that ends before its header says it does is cut short.
        That is an error, or with ``repair`` a warning and ``missing`` frames."""
        promised = self._header_end()
        if promised is None or end is None:
            return
        if self.end is not None:
            promised = min(promised, int(self.end / self.time_base))
        short = promised - end
        if short <= 2 * frame:  # rounding, and a last frame's duration that a muxer leaves out
            return
        tb = self.time_base
        self.missing = round(short / frame)
        message = (
            f"{self.path}: the file ends at {float(end * tb):.2f} s but its header says {float(promised * tb):.2f} s: "
            f"about {self.missing} frame(s) are missing (the file is cut short)"
        )
        if not self.repair:
            raise VideoError(message, "pass --repair to keep what it holds; add --resume to reuse the frames done")
        warnings.warn(message, UserWarning, stacklevel=2)

    def to_rgb(self, frame: Any) -> np.ndarray:
        """(H,W,3), or (H,W,4) with the alpha plane, uint8 or uint16 for deeper sources."""
        layouts = {(False, False): "rgb24", (False, True): "rgb48le", (True, False): "rgba", (True, True): "rgba64le"}
        layout = layouts[self.alpha, self.deep]
        rgb = frame.reformat(
            format=layout,
            src_colorspace=self.colour.sws_matrix(self.width, self.height),
            src_color_range=self.colour.sws_range(self.pix_fmt),
            interpolation=_SWS_FLAGS,
        )
        arr: np.ndarray = rgb.to_ndarray()
        if self.alpha and frame.format.name in _YUVA8:  # the plane itself: exact, not via swscale
            arr[:, :, 3] = _alpha_view(frame)
        return arr


class FrameFolder:
    """A folder of images, in natural order, as a video at ``rate`` frames per second."""

    def __init__(self, path: Path, rate: Fraction | None = None):
        self.path = path
        self.files = sorted((p for p in path.iterdir() if p.is_file() and is_image_path(p)), key=_natural)
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

    def frames(self, skip_below: int = 0) -> Iterator[Frame]:
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


Source = VideoSource | FrameFolder


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _is_cover(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _bits(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def open_input(path: Path) -> Any:
    """av.open for reading, with one-line errors for a missing or unreadable file."""
    if not path.exists():
        raise VideoError(f"{path}: no such file", "check the path")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder", "pass a video file, or a folder of frames with frame files in it")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: is empty", "pass a video file")
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise VideoError(
            f"{path}: not a video FFmpeg can read ({e.strerror or e})", "check the file, or convert it first"
        ) from None


def encoder_threads(options: VideoOptions, deblurrer: Deblurrer) -> int:
    if options.encoder_threads is not None:
        return options.encoder_threads
    return 1 if deblurrer.device.type == "cpu" else 0


def open_source(path: Path, options: VideoOptions) -> Source:
    if path.is_dir():
        if options.start is not None or options.end is not None:
            raise VideoError(f"{path}: --start/--end need a video file", "cut the frame folder instead")
        return FrameFolder(path, options.fps)
    return VideoSource(path, options.start, options.end, options.repair, options.fps)


# -- encoding ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """One encoded video stream: what every segment's encoder and the final muxer agree on."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    rate: Fraction
    colour: Colour
    options: tuple[tuple[str, str], ...]
    bit_rate: int | None
    global_header: bool
    threads: int = 1
    sar: Fraction | None = None  # sample (pixel) aspect ratio; None: square pixels

    def encoder(self) -> Any:
        """A fresh, open encoder. Raises VideoError when FFmpeg refuses the settings."""
        if self.codec == "libsvtav1":
            # SVT-AV1 prints 25 lines per encoder (one per segment) unless told otherwise; a
            # level the user set stays theirs.
            os.environ.setdefault("SVT_LOG", "1")
        ctx = av.CodecContext.create(self.codec, "w")
        self.configure(ctx)
        # One encoder thread by default on CPU, where inference is 98% of the time and the
        # encoder should not compete with it; on a GPU the encoder would set the pace, so there
        # it gets FFmpeg's choice. (Neither makes x264 bit-reproducible: for identical YUV input
        # a fresh single-threaded x264 encoder gave a different first packet in 4 of 16 runs
        # under load. FFV1 is.)
        ctx.thread_count = self.threads
        if self.global_header:
            ctx.flags |= _GLOBAL_HEADER_CODEC
        try:
            ctx.open()
        except av.error.FFmpegError as e:
            raise VideoError(
                f"the {self.codec} encoder refused {self.width}x{self.height} {self.pix_fmt} "
                f"with {dict(self.options)} ({e.strerror or e})",
                "check --codec, --pix-fmt, --crf and --preset",
            ) from None
        return ctx

    def configure(self, ctx: Any) -> None:
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, self.pix_fmt
        ctx.time_base = self.time_base
        ctx.framerate = self.rate
        ctx.colorspace = self.colour.matrix
        ctx.color_range = self.colour.range
        ctx.color_primaries = self.colour.primaries
        ctx.color_trc = self.colour.trc
        if self.sar is not None:
            ctx.sample_aspect_ratio = self.sar
        if self.bit_rate is not None:
            ctx.bit_rate = self.bit_rate
        ctx.options = dict(self.options)

    def to_frame(self, rgb: np.ndarray, pts: int, alpha: np.ndarray | None = None) -> Any:
        deep = rgb.dtype == np.uint16
        if alpha is not None and _has_alpha(self.pix_fmt):
            rgb = np.dstack([rgb, alpha[: rgb.shape[0], : rgb.shape[1]]])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgba64le" if deep else "rgba")
        else:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
        out = frame.reformat(
            format=self.pix_fmt,
            dst_colorspace=self.colour.sws_matrix(self.width, self.height),
            dst_color_range=self.colour.sws_range(self.pix_fmt),
            interpolation=_SWS_FLAGS,
        )
        if alpha is not None and self.pix_fmt in _YUVA8 and alpha.dtype == np.uint8:
            _alpha_view(out)[...] = alpha[: out.height, : out.width]  # exactly as it came
        out.pts = pts
        out.time_base = self.time_base
        out.colorspace = self.colour.matrix
        out.color_range = self.colour.range
        return out


def resolve_codec(name: str | None, output: Path) -> str:
    """--codec or the output extension's default -> an FFmpeg encoder name. Raises VideoError."""
    codec = (name or DEFAULT_CODECS.get(output.suffix.lower(), "libx264")).strip().lower()
    codec = CODEC_ALIASES.get(codec, codec)
    try:
        c = av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        raise VideoError(
            f"unknown video encoder {name!r}", "use h264, hevc, vp9, av1, ffv1, prores or another FFmpeg encoder"
        ) from None
    if c.type != "video":
        raise VideoError(f"{codec!r} is not a video encoder", "use h264, hevc, vp9, av1, ffv1 or prores")
    return c.name


def choose_pix_fmt(
    codec: str, source: str, requested: str | None, deep: bool, name: str = "the input"
) -> tuple[str, str | None]:
    """The pixel format to encode: the requested one, else the input's where the encoder takes it,
    else its nearest (same depth and chroma first). Returns (pix_fmt, warning or None)."""
    supported = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    alpha = _has_alpha(source)
    if requested:
        try:
            av.VideoFormat(requested)
        except (ValueError, TypeError):
            raise VideoError(f"unknown pixel format {requested!r}", "use e.g. yuv420p, yuv444p, yuv420p10le") from None
        if supported and requested not in supported:
            raise VideoError(f"{codec} cannot encode {requested}", f"use one of {', '.join(supported)}")
        dropped = alpha and not _has_alpha(requested)
        return requested, ("the alpha channel (transparency) is dropped, as --pix-fmt asks" if dropped else None)
    if not supported or source in supported:
        return source, None
    if alpha and codec in ("libvpx", "libvpx-vp9"):
        return "yuva420p", None  # libvpx encodes alpha as a second 4:2:0 stream only
    if alpha and not any(_has_alpha(f) for f in supported):
        raise VideoError(
            f"{name} is transparent (an alpha channel), which {codec} cannot hold",
            "write .webm (VP9), or -c ffv1 into .mkv, or -c prores_ks into .mov, or --frames (PNG); "
            "--pix-fmt yuv420p drops the transparency",
        )
    want_bits = 10 if deep else 8
    chroma = _chroma(source)
    ranked = sorted(
        supported,
        key=lambda f: (
            min(_bits(f), want_bits) != want_bits,
            _chroma(f) != chroma,
            av.VideoFormat(f).is_rgb,
            abs(_bits(f) - want_bits),
            _has_alpha(f) != alpha,  # alpha where the input has it, none where it has none
        ),
    )
    best = ranked[0]
    note = None
    if _bits(best) < _bits(source):
        note = f"{codec} cannot encode {source}; writing {best} (fewer bits per sample)"
    return best, note


def _chroma(pix_fmt: str) -> tuple[int, int]:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    if fmt.is_rgb or len(fmt.components) < 3:
        return (16, 16)
    return (fmt.components[1].width, fmt.components[1].height)


def even_size(pix_fmt: str, width: int, height: int) -> bool:
    fmt = av.VideoFormat(pix_fmt, width, height)
    if fmt.is_rgb or len(fmt.components) < 3:
        return True
    cw, ch = _chroma(pix_fmt)
    return (width % (16 // cw) == 0) and (height % (16 // ch) == 0)


def encoder_options(codec: str, crf: int | None, preset: str | None) -> tuple[dict[str, str], int | None]:
    """FFmpeg options (and bit rate) for --crf/--preset on this encoder."""
    opts: dict[str, str] = {}
    bit_rate = None
    quality = crf if crf is not None else DEFAULT_CRF.get(codec)
    if quality is not None:
        if codec not in DEFAULT_CRF:
            raise VideoError(f"--crf does not apply to {codec}", f"use it with {', '.join(DEFAULT_CRF)}")
        opts["crf"] = str(quality)
        if codec == "libvpx-vp9":
            bit_rate = 0  # constant quality, no bit-rate cap
            opts["row-mt"] = "1"
    if codec == "libx265":
        opts["x265-params"] = "log-level=error"  # not a banner per segment on stderr
    if preset:
        if codec in ("libx264", "libx265", "libsvtav1"):
            opts["preset"] = preset
        elif codec == "libvpx-vp9":
            if not preset.isdigit():
                raise VideoError(f"--preset for vp9 is a speed 0..8, not {preset!r}", "e.g. --preset 4")
            opts["cpu-used"] = preset
        else:
            raise VideoError(f"--preset does not apply to {codec}", "use it with h264, hevc, vp9 or av1")
    return opts, bit_rate


# -- segments: the checkpoints of a run --------------------------------------------------------
_MAGIC = b"MIMOSEG2"
_RECORD = struct.Struct("<Bqqq?IB")  # stream, pts, dts, duration, keyframe, size, side data entries
_SIDE = struct.Struct("<BI")  # name length, size; then the name and the bytes (VP9's alpha, say)
_NONE = -(2**63)


def _write_segment(path: Path, packets: list[tuple[int, Any]], frames: int) -> None:
    buf = io.BytesIO()
    header = json.dumps({"frames": frames}).encode()
    buf.write(_MAGIC + struct.pack("<I", len(header)) + header)
    for stream, p in packets:
        data = bytes(p)
        side = [(sd.data_type.encode(), bytes(sd)) for sd in p.iter_sidedata()]
        buf.write(
            _RECORD.pack(
                stream,
                _NONE if p.pts is None else p.pts,
                _NONE if p.dts is None else p.dts,
                p.duration or 0,
                bool(p.is_keyframe),
                len(data),
                len(side),
            )
        )
        buf.write(data)
        for name, body in side:
            buf.write(_SIDE.pack(len(name), len(body)) + name + body)
    write_bytes_atomic(path, buf.getvalue())


Record = tuple[int, int | None, int | None, int, bool, bytes, list[tuple[str, bytes]]]


def _read_segment(path: Path) -> tuple[int, list[Record]]:
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise VideoError(f"{path}: is not a mimo segment", "delete the work folder and run again")
    (n,) = struct.unpack_from("<I", data, len(_MAGIC))
    pos = len(_MAGIC) + 4
    frames = int(json.loads(data[pos : pos + n])["frames"])
    pos += n
    records = []
    while pos < len(data):
        stream, pts, dts, duration, key, size, n_side = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        body = data[pos : pos + size]
        pos += size
        side = []
        for _ in range(n_side):
            name_len, side_size = _SIDE.unpack_from(data, pos)
            pos += _SIDE.size
            name = data[pos : pos + name_len].decode()
            pos += name_len
            side.append((name, data[pos : pos + side_size]))
            pos += side_size
        records.append(
            (stream, None if pts == _NONE else pts, None if dts == _NONE else dts, duration, key, body, side)
        )
    return frames, records


class WorkDir:
    """``.NAME.mimo-partial`` beside the output: the settings of the run and its finished segments."""

    def __init__(self, output: Path):
        self.path = output.parent / f".{output.name}.mimo-partial"
        self.manifest = self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest.exists()

    def segment(self, i: int) -> Path:
        return self.path / f"segment-{i:06d}.bin"

    def done(self) -> int:
        """How many segments, from the first, are complete."""
        i = 0
        while self.segment(i).exists():
            i += 1
        return i

    def frames_done(self) -> int:
        return sum(_read_segment(self.segment(i))[0] for i in range(self.done()))

    def settings(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def start(self, settings: dict[str, Any]) -> None:
        self.clear()
        self.path.mkdir(parents=True)
        write_bytes_atomic(self.manifest, json.dumps(settings, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# -- the pipeline ------------------------------------------------------------------------------
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Channel:
    """A bounded queue whose ends give up when the run is stopped."""

    def __init__(self, size: int, stop: threading.Event):
        self.q: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END


def model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def scale_path(output: Path, scale: float, frames: bool) -> Path:
    name = SCALE_NAMES[scale]
    if frames:
        return output.parent / f"{output.name}_{name}"
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def deblur_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    deblurrer: Deblurrer,
    options: VideoOptions = VideoOptions(),  # noqa: B008  (frozen)
    on_progress: ProgressFn | None = None,
) -> VideoSummary:
    """Deblur a video file (or a folder of frames) into ``output`` (a video, or with
    ``options.frames`` a folder of PNG frames).

    Raises VideoError for bad input or settings, OutputError when the output exists (without
    ``overwrite``) or is the input. KeyboardInterrupt and errors leave the input untouched and
    nothing under the output name; the finished segments stay for ``resume``.
    """
    src_path, out_path = Path(input), Path(output)
    _check_request(src_path, out_path, options)

    started = time.perf_counter()
    source = open_source(src_path, options)
    summary = VideoSummary(str(src_path), str(out_path), width=source.width, height=source.height)
    try:
        deblurrer.plan(source.total, source.height, source.width)
        run = _run_frames if options.frames else _run_video
        run(source, out_path, deblurrer, options, on_progress, summary)
    except (OSError, av.error.PyAVCallbackError) as e:  # a read-only folder, a full disk
        if isinstance(e, av.error.PyAVCallbackError):  # a write into our file object failed while muxing
            if not isinstance(e.__context__, OSError):
                raise
            e = e.__context__
        again = ", then run again with --resume to keep the finished part" if WorkDir(out_path).exists() else ""
        raise OutputError(
            f"{out_path}: cannot write ({e.strerror or e})",
            f"check that {out_path.parent.resolve()} is writable and has free space{again}",
        ) from e
    finally:
        source.close()
    summary.frames = summary.resumed + summary.deblurred
    summary.missing = source.missing if isinstance(source, VideoSource) else 0
    summary.seconds = time.perf_counter() - started
    summary.fps = summary.deblurred / summary.seconds if summary.seconds else 0.0
    return summary


def _check_request(src_path: Path, out_path: Path, options: VideoOptions) -> None:
    """What can be refused before any file is opened. Raises VideoError or OutputError."""
    if options.batch < 1:
        raise VideoError(f"batch must be at least 1, not {options.batch}", "use --batch 1 or more")
    if options.checkpoint < 1:
        raise VideoError(f"checkpoint must be at least 1 frame, not {options.checkpoint}", "use e.g. 120")
    if options.start is not None and options.end is not None and options.end <= options.start:
        raise VideoError(f"--end {options.end} is not after --start {options.start}", "pick a later --end")
    if out_path.resolve() == src_path.resolve():
        raise OutputError(f"{out_path}: is the input; refusing to write over it", "choose another output name")
    if not options.frames and out_path.suffix.lower() not in FORMATS:
        raise VideoError(
            f"{out_path}: cannot tell the container from the extension",
            f"use one of {', '.join(FORMATS)}, or --frames for a folder of PNG frames",
        )
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the folder {out_path.parent} does not exist", "create it first")
    if out_path.is_dir() and not options.frames:
        raise OutputError(f"{out_path}: is a folder", "name a video file, or pass --frames to write PNG frames into it")


def plan_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: VideoOptions = VideoOptions(),  # noqa: B008
) -> dict[str, Any]:
    """What ``deblur_video`` would read and write, with the same refusals, but no model, no
    decoding and no file written (--dry-run). Raises VideoError or OutputError as it would."""
    src_path, out_path = Path(input), Path(output)
    _check_request(src_path, out_path, options)
    source = open_source(src_path, options)
    try:
        plan: dict[str, Any] = {
            "input": str(src_path),
            "size": f"{source.width}x{source.height}",
            "frames": source.total,
            "fps": float(source.rate),
            "pix_fmt": source.pix_fmt,
            "output": str(out_path),
        }
        if options.frames:
            plan["writes"] = "PNG frames"
            return plan
        outputs, codec, pix_fmt, note, _ = _encoding(source, out_path, options, str(src_path))
        work = WorkDir(out_path)
        plan.update(
            codec=codec,
            out_pix_fmt=pix_fmt,
            outputs=[str(p) for p in outputs],
            resumes_from=work.frames_done() if options.resume and work.exists() else 0,
            warning=note,
        )
        if isinstance(source, VideoSource):
            plan["streams_copied"] = sum(1 for s in source.container.streams if s.index != source.stream.index)
        return plan
    finally:
        source.close()


MANIFEST_VERSION = 3  # 2: channels_last and compile joined the settings; 3: aspect ratio and colour tags


def _fix_tile(deblurrer: Deblurrer, height: int, width: int) -> int:
    """Pin --tile auto to one size for the whole video, so every frame (and a resumed run) is
    processed alike."""
    if deblurrer.tile is None:
        hp, wp = round_up(height), round_up(width)
        tile = choose_tile(deblurrer.device, deblurrer.dtype, hp, wp)
        deblurrer.tile = 0 if tile >= max(hp, wp) else tile  # 0: whole frames, whatever memory is free
    return deblurrer.tile


def _settings(
    source: Source, deblurrer: Deblurrer, options: VideoOptions, specs: list[StreamSpec], tile: int
) -> dict[str, Any]:
    """Everything the output's bytes depend on; a resumed run must match it."""
    return {
        "version": MANIFEST_VERSION,
        "input": _fingerprint(source),
        "model": model_fingerprint(deblurrer.model),
        **deblurrer.settings,
        "tile": tile,
        "tile_overlap": deblurrer.tile_overlap,
        "batch": options.batch,
        "checkpoint": options.checkpoint,
        "start": options.start,
        "end": options.end,
        "streams": [
            {
                "codec": s.codec,
                "size": f"{s.width}x{s.height}",
                "pix_fmt": s.pix_fmt,
                "options": dict(s.options),
                "threads": s.threads,
                "sar": str(s.sar) if s.sar else None,
                "colour": [s.colour.matrix, s.colour.range, s.colour.primaries, s.colour.trc],
            }
            for s in specs
        ],
    }


def _fingerprint(source: Source) -> dict[str, Any]:
    if isinstance(source, FrameFolder):
        files = source.files
        st = [f.stat() for f in files]
        digest = hashlib.sha256(
            "\n".join(f"{f.name}:{s.st_size}:{s.st_mtime_ns}" for f, s in zip(files, st, strict=True)).encode()
        )
        return {"path": str(source.path.resolve()), "frames": digest.hexdigest()[:16], "fps": str(source.rate)}
    s = source.path.stat()
    return {"path": str(source.path.resolve()), "size": s.st_size, "mtime_ns": s.st_mtime_ns}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _encoding(
    source: Source, out_path: Path, options: VideoOptions, name: str
) -> tuple[list[Path], str, str, str | None, tuple[dict[str, str], int | None]]:
    """The output files, codec, pixel format (with a warning or None) and encoder options of a
    video run, refusing what the run would refuse: existing outputs, a pixel format the encoder
    lacks or the frame size does not fit. Shared by the run and its --dry-run."""
    outputs = [out_path] + ([scale_path(out_path, s, False) for s in SCALE_NAMES] if options.save_scales else [])
    for p in outputs:
        if p.exists() and not options.overwrite:
            raise OutputError(f"{p}: already exists", "pass --overwrite to replace it")
    codec = resolve_codec(options.codec, out_path)
    pix_fmt, note = choose_pix_fmt(codec, source.pix_fmt, options.pix_fmt, source.deep, name)
    if not even_size(pix_fmt, source.width, source.height):
        raise VideoError(
            f"{name}: {source.width}x{source.height} cannot be encoded as {pix_fmt}, whose colour planes "
            "need an even width and height",
            "pass --pix-fmt yuv444p to keep every pixel",
        )
    return outputs, codec, pix_fmt, note, encoder_options(codec, options.crf, options.preset)


def _run_video(
    source: Source,
    out_path: Path,
    deblurrer: Deblurrer,
    options: VideoOptions,
    on_progress: ProgressFn | None,
    summary: VideoSummary,
) -> None:
    """Video out: checkpointed segments, then one mux of them and the input's other streams."""
    fmt = FORMATS[out_path.suffix.lower()]
    outputs, codec, pix_fmt, note, (opts, bit_rate) = _encoding(source, out_path, options, summary.input)
    if note:
        summary.warnings.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
    global_header = bool(av.format.ContainerFormat(fmt, "w").flags & _GLOBAL_HEADER_FORMAT)
    specs = []
    for div in (1, 2, 4) if options.save_scales else (1,):
        w, h = -(-source.width // div), -(-source.height // div)
        if div > 1 and not even_size(pix_fmt, w, h):
            w, h = w - w % 2, h - h % 2  # the coarse outputs are previews: drop an odd last row/column
        specs.append(
            StreamSpec(
                codec,
                w,
                h,
                pix_fmt,
                source.time_base,
                source.rate,
                source.colour.tagged(w, h, pix_fmt),
                tuple(sorted(opts.items())),
                bit_rate,
                global_header,
                encoder_threads(options, deblurrer),
                source.sar,
            )
        )
    specs[0].encoder()  # refuse bad settings before any work
    auto_tile = deblurrer.tile is None
    tile = _fix_tile(deblurrer, source.height, source.width)
    settings = _settings(source, deblurrer, options, specs, tile)
    work = WorkDir(out_path)
    if work.exists():
        old = work.settings()
        if options.resume and old.get("version") != MANIFEST_VERSION:
            raise VideoError(
                f"{out_path}: the interrupted run in {work.path} was made by another version of mimocli",
                "pass --overwrite to start over",
            )
        if options.resume:
            if auto_tile and isinstance(old.get("tile"), int):
                deblurrer.tile = settings["tile"] = old["tile"]  # auto then is auto now, whatever memory is free
            diff = _diff(old, settings)
            if diff:
                raise VideoError(
                    f"{out_path}: the interrupted run used other settings ({', '.join(diff)})",
                    "resume with the same options and weights, or pass --overwrite to start over",
                )
        elif not options.overwrite:
            raise OutputError(
                f"{out_path}: an interrupted run left its work in {work.path}",
                "pass --resume to continue it, or --overwrite to start over",
            )
        else:
            work.start(settings)
    else:
        work.start(settings)

    summary.resumed = work.frames_done()
    summary.codec, summary.pix_fmt = codec, pix_fmt

    writer = _SegmentWriter(work, specs, options.checkpoint, work.done())
    _pipeline(source, deblurrer, options, summary.resumed, writer, summary, on_progress, source.total)
    if not summary.resumed + summary.deblurred:
        work.clear()
        raise _no_frames(source, options)

    t0 = time.perf_counter()
    summary.streams_copied = _assemble(source, work, outputs, specs, writer.segments)
    summary.encode_seconds += time.perf_counter() - t0
    for s, p in zip(SCALE_NAMES, outputs[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(p)
    work.clear()
    for p in outputs:
        remove_stale_parts(p)  # what a run killed while muxing left behind


class _SegmentWriter:
    """Encodes frames into segment files of ``checkpoint`` frames each (runs in the encoder thread)."""

    def __init__(self, work: WorkDir, specs: list[StreamSpec], checkpoint: int, first_segment: int):
        self.work, self.specs, self.checkpoint = work, specs, checkpoint
        self.segments = first_segment  # complete so far
        self.encoders: list[Any] = []
        self.packets: list[tuple[int, Any]] = []
        self.durations: list[dict[int, int]] = []
        self.frames = 0

    def add(self, frame: Frame, images: list[np.ndarray]) -> None:
        if not self.encoders:
            self.encoders = [s.encoder() for s in self.specs]
            self.durations = [{} for _ in self.specs]
        for k, (spec, enc, img) in enumerate(zip(self.specs, self.encoders, images, strict=False)):
            self.durations[k][frame.pts] = frame.duration
            div = -(-self.specs[0].width // spec.width) if k else 1  # 1, 2 or 4: the alpha of that scale
            alpha = None if frame.alpha is None else frame.alpha[::div, ::div][: spec.height, : spec.width]
            vf = spec.to_frame(np.ascontiguousarray(img[: spec.height, : spec.width]), frame.pts, alpha)
            self._keep(k, enc.encode(vf))
        self.frames += 1
        if self.frames == self.checkpoint:
            self.close()

    def _keep(self, k: int, packets: list[Any]) -> None:
        for p in packets:
            if not p.duration:
                p.duration = self.durations[k].pop(p.pts, 0) if p.pts is not None else 0
            else:
                self.durations[k].pop(p.pts, None)
            self.packets.append((k, p))

    def close(self) -> None:
        """Flush the encoders and write the segment (nothing when no frame came)."""
        if not self.encoders:
            return
        for k, enc in enumerate(self.encoders):
            self._keep(k, enc.encode(None))
            _repair_dts([p for s, p in self.packets if s == k])
        _write_segment(self.work.segment(self.segments), self.packets, self.frames)
        self.segments += 1
        self.encoders, self.packets, self.frames = [], [], 0


def _repair_dts(packets: list[Any]) -> None:
    """Give a segment's packets (in decode order) sound decode times when the encoder did not:
    libx265 returns garbage ones from its third instance in a process on. Each becomes the
    sorted presentation times, moved back by the least amount that keeps every dts <= its pts."""
    pts = [p.pts for p in packets]
    if not packets or any(t is None for t in pts):
        return
    frame = max(1, max((p.duration or 0) for p in packets))
    if all(p.dts is not None and 0 <= p.pts - p.dts <= 64 * frame for p in packets):
        return
    order = sorted(pts)
    shift = max(0, *(o - t for o, t in zip(order, pts, strict=True)))
    for p, o in zip(packets, order, strict=True):
        p.dts = o - shift


def _pipeline(
    source: Source,
    deblurrer: Deblurrer,
    options: VideoOptions,
    skip: int,
    sink: Any,
    summary: VideoSummary,
    on_progress: ProgressFn | None,
    total: int | None,
) -> None:
    """decode thread -> (batched inference here) -> encode thread, through bounded queues."""
    stop = threading.Event()
    size = 2 * options.batch + 2
    decoded, inferred = _Channel(size, stop), _Channel(size, stop)
    times = {"decode": 0.0, "encode": 0.0}

    def decode() -> None:
        try:
            it = source.frames(skip)
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                times["decode"] += time.perf_counter() - t0
                if frame is None:
                    break
                if frame.pixels is None:
                    continue
                if not decoded.put(frame):
                    return
            decoded.put(_END)
        except BaseException as e:  # handed to the caller's thread
            decoded.put(_Failed(e))

    def encode() -> None:
        try:
            while True:
                item = inferred.get()
                if item is _END:
                    break
                t0 = time.perf_counter()
                sink.add(*item)
                times["encode"] += time.perf_counter() - t0
            if not stop.is_set():
                t0 = time.perf_counter()
                sink.close()
                times["encode"] += time.perf_counter() - t0
        except BaseException as e:
            failures.append(e)
            stop.set()

    failures: list[BaseException] = []
    threads = [threading.Thread(target=decode, name="mimo-decode", daemon=True)]
    threads.append(threading.Thread(target=encode, name="mimo-encode", daemon=True))
    for t in threads:
        t.start()
    done = skip
    if on_progress:
        on_progress(done, total)
    try:
        pending: list[Frame] = []
        finished = False
        while not finished:
            item = decoded.get()
            if isinstance(item, _Failed):
                raise item.error
            if item is _END:
                finished = True
            else:
                pending.append(item)
            # Batches never cross a checkpoint, so a resumed run batches frames as a whole one did.
            full = len(pending) == options.batch
            boundary = pending and (pending[-1].index + 1) % options.checkpoint == 0
            if pending and (full or boundary or finished):
                t0 = time.perf_counter()
                outs = deblurrer.frames(np.stack([f.pixels for f in pending]))  # type: ignore[misc]
                summary.infer_seconds += time.perf_counter() - t0
                for i, f in enumerate(pending):
                    f.pixels = None  # let the decoded frame go
                    summary.repaired += f.repaired
                    if not inferred.put((f, [o[i] for o in outs])):
                        break
                    if failures:
                        break
                done += len(pending)
                summary.deblurred += len(pending)
                pending = []
                if on_progress:
                    on_progress(done, max(total, done) if total else None)
            if failures:
                break
        inferred.put(_END)
        threads[1].join()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    if failures:
        raise failures[0]
    summary.decode_seconds += times["decode"]
    summary.encode_seconds += times["encode"]


def _no_frames(source: Source, options: VideoOptions) -> VideoError:
    where = ""
    if options.start is not None or options.end is not None:
        where = f" between {options.start or 0:g} s and {'the end' if options.end is None else f'{options.end:g} s'}"
    length = source.seconds if isinstance(source, VideoSource) else None
    long = f"; the video is {length:.2f} s long" if length is not None else ""
    return VideoError(f"{source.path}: no frames to deblur{where}{long}", "check --start and --end, and the file")


def _display_matrix(frame: Any) -> list[int] | None:
    """The display matrix (rotation/flip) the decoder attaches to a frame, as 9 ints."""
    sd: Any
    for sd in frame.side_data:
        if str(sd.type).endswith("DISPLAYMATRIX"):
            return list(struct.unpack("<9i", bytes(sd)[:36]))
    return None


def _assemble(source: Source, work: WorkDir, outputs: list[Path], specs: list[StreamSpec], segments: int) -> int:
    """Mux the segments (and the input's other streams, into the main output) under temporary
    names, then rename them all. Returns how many streams were copied from the input."""
    copied = 0
    with contextlib.ExitStack() as stack:
        for k, (path, spec) in enumerate(zip(outputs, specs, strict=True)):
            f = stack.enter_context(atomic_write(path))
            n = _mux(f, FORMATS[path.suffix.lower()], source if k == 0 else None, work, spec, k, segments)
            if k == 0:
                copied = n
    return copied


def _mux(file: Any, fmt: str, source: Source | None, work: WorkDir, spec: StreamSpec, k: int, segments: int) -> int:
    """Mux stream ``k`` of the segments, and with a VideoSource everything else it holds, into ``file``."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(file, "w", format=fmt, options=_muxer_options(source, fmt)))
        video: Any = out.add_stream(spec.codec, rate=spec.rate)
        spec.configure(video.codec_context)
        video.time_base = spec.time_base
        if _has_alpha(spec.pix_fmt) and spec.codec in ("libvpx", "libvpx-vp9"):
            video.metadata["alpha_mode"] = "1"  # WebM's AlphaMode: players then read the alpha side stream
        others: Iterator[tuple[float, Any]] = iter(())
        copied = 0
        if isinstance(source, VideoSource):
            src = stack.enter_context(av.open(str(source.path), metadata_errors="replace"))
            out.metadata.update(_tags(src.metadata))
            vin = src.streams[source.stream.index]
            video.metadata.update(_tags(vin.metadata))
            video.disposition = vin.disposition
            if source.display_matrix:
                video.set_display_matrix(source.display_matrix)
            streams = _copy_streams(src, out, source, fmt)
            copied = len(streams)
            with contextlib.suppress(AttributeError, ValueError, av.error.FFmpegError):
                chapters = src.chapters()
                if chapters and source.start is None and source.end is None:
                    out.set_chapters(chapters)
            if streams:
                cut = float(source.shift * source.time_base) if source.start is not None else None
                others = _other_packets(src, streams, cut, source.end)
        video_packets = _segment_packets(work, k, segments, spec.time_base, video)
        for _t, packet in heapq.merge(video_packets, others, key=lambda item: item[0]):
            out.mux(packet)
    return copied


def _muxer_options(source: Source | None, fmt: str) -> dict[str, str]:
    """What the muxer takes from the input: an MP4/MOV's major brand (mp42, qt, a phone's own),
    which FFmpeg would otherwise replace by isom."""
    if not isinstance(source, VideoSource) or fmt not in ("mp4", "mov"):
        return {}
    brand = source.container.metadata.get("major_brand", "").strip()
    return {"brand": brand} if len(brand) == 4 and brand.isprintable() else {}


def _tags(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata to carry over: all but what the muxer writes itself."""
    return {
        k: v
        for k, v in metadata.items()
        if k.lower() not in ("encoder", "duration", "major_brand", "minor_version", "compatible_brands")
    }


def _copy_streams(src: Any, out: Any, source: VideoSource, fmt: str) -> dict[int, Any]:
    """Output streams for every input stream but the deblurred one, by input index."""
    streams: dict[int, Any] = {}
    for s in src.streams:
        if s.index == source.stream.index:
            continue
        try:
            o = out.add_stream_from_template(s, opaque=True)
        except (ValueError, av.error.FFmpegError) as e:
            name = s.codec_context.name if s.codec_context is not None else s.type
            what = f"{s.type} stream #{s.index} ({name})"
            if s.type in ("data", "attachment"):
                warnings.warn(f"{what} cannot be stored in {fmt}; left out", UserWarning, stacklevel=3)
                continue
            raise VideoError(
                f"{source.path}: its {what} cannot be stored in {fmt} ({e})", "write .mkv, which holds every stream"
            ) from None
        o.metadata.update(_tags(s.metadata))
        o.disposition = s.disposition
        streams[s.index] = o
    return streams


def _segment_packets(work: WorkDir, k: int, segments: int, tb: Fraction, stream: Any) -> Iterator[tuple[float, Any]]:
    last_dts: int | None = None
    for i in range(segments):
        _frames, records = _read_segment(work.segment(i))
        for s, pts, dts, duration, key, data, side in records:
            if s != k:
                continue
            p = av.Packet(data)
            for name, body in side:
                sd = PacketSideData(packet_sidedata_type_from_literal(name), len(body))  # type: ignore[call-arg,arg-type]
                memoryview(sd)[:] = body
                sd.to_packet(p, move=True)
            p.pts, p.duration, p.time_base = pts, duration, tb
            if dts is not None and last_dts is not None and dts <= last_dts:
                dts = last_dts + 1  # segments meet: keep decode times increasing
            p.dts = dts
            last_dts = dts
            p.is_keyframe = key
            p.stream = stream
            yield float((dts if dts is not None else pts or 0) * tb), p


def _other_packets(
    src: Any, streams: dict[int, Any], cut: float | None, end: float | None
) -> Iterator[tuple[float, Any]]:
    """The input's packets of ``streams``, cut at ``cut`` seconds (the first deblurred frame's
    time, which becomes 0) and at ``end``. Every stream is cut at that one instant: an audio
    packet that straddles it, and the one before it (which primes AAC/MP3 decoders), keep their
    true times, negative ones included, so that the muxer trims them (an MP4 edit list, Matroska's
    shift of every stream alike) rather than squeezing them onto 0 and shifting the sound."""
    before: dict[int, Any] = {}  # per audio stream: the last packet that ends before the cut
    for p in src.demux(*(src.streams[i] for i in streams)):
        if p.size == 0 and p.pts is None and p.dts is None:
            continue  # the demuxer's end-of-stream marker
        tb = p.time_base
        t = p.pts if p.pts is not None else p.dts
        audio = p.stream.type == "audio"
        if t is not None and cut is not None and float((t + (p.duration or 0)) * tb) <= cut:
            if audio:
                before[p.stream_index] = p
            continue
        if t is not None and end is not None and float(t * tb) >= end:
            continue
        if cut is not None and (primer := before.pop(p.stream_index, None)) is not None:
            yield _shifted(primer, cut, streams)
        yield _shifted(p, cut, streams)


def _shifted(p: Any, cut: float | None, streams: dict[int, Any]) -> tuple[float, Any]:
    tb = p.time_base
    if cut:
        d = round(cut / tb)
        if p.pts is not None:
            p.pts -= d
        if p.dts is not None:
            p.dts -= d
        if p.stream.type != "audio" and p.pts is not None and p.pts < 0:  # a subtitle shown since before
            if p.duration:
                p.duration = max(1, p.duration + p.pts)
            p.dts = p.pts = 0
    p.stream = streams[p.stream_index]
    ts = p.dts if p.dts is not None else p.pts
    return float((ts or 0) * tb), p


# -- frames out --------------------------------------------------------------------------------
def _frame_name(source: Source, index: int) -> str:
    if isinstance(source, FrameFolder):
        return source.files[index].stem + ".png"
    return f"frame_{index + 1:06d}.png"


class _FrameWriter:
    def __init__(self, source: Source, folders: list[Path]):
        self.source, self.folders = source, folders

    def add(self, frame: Frame, images: list[np.ndarray]) -> None:
        name = _frame_name(self.source, frame.index)
        for k, (folder, img) in enumerate(zip(self.folders, images, strict=False)):
            if frame.alpha is not None:  # RGBA PNG: the transparency as it came
                s = 2**k
                img = np.dstack([img, frame.alpha[::s, ::s][: img.shape[0], : img.shape[1]]])
            write_image(folder / name, img)

    def close(self) -> None:
        pass


def _run_frames(
    source: Source,
    out_path: Path,
    deblurrer: Deblurrer,
    options: VideoOptions,
    on_progress: ProgressFn | None,
    summary: VideoSummary,
) -> None:
    """Frames out: one PNG per frame, each written atomically, so a rerun with resume skips the
    frames already there."""
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
    _fix_tile(deblurrer, source.height, source.width)
    skip = 0
    if options.resume:
        # Each frame is written atomically: continue after the frames present in every folder.
        names = [{p.name for p in folder.glob("*.png")} for folder in folders]
        total = source.total
        while (total is None or skip < total) and all(_frame_name(source, skip) in n for n in names):
            skip += 1
        if options.batch > 1:
            skip -= skip % options.checkpoint  # batch the rest as an uninterrupted run does
    summary.resumed = skip
    writer = _FrameWriter(source, folders)
    _pipeline(source, deblurrer, options, skip, writer, summary, on_progress, source.total)
    if not summary.resumed + summary.deblurred:
        raise _no_frames(source, options)
    for s, folder in zip(SCALE_NAMES, folders[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(folder)
