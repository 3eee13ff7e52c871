"""The input video: demux, decode (with the alpha side stream of WebM), colour to RGB, timing,
damaged and cut-short files; and opening a file or a folder of frames as a source."""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from mimocli.errors import VideoError

from .formats import SWS_FLAGS, YUVA8, Colour, alpha_view, bits, has_alpha

MAX_FPS = 1000  # above any camera's rate (slow motion reaches 960): a raw stream saying more gives its time base
_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}  # decoders that read WebM's alpha side stream
DEFAULT_FPS = Fraction(25)  # frame folders, as FFmpeg's image2 demuxer assumes


# Demuxers of raw elementary streams, which stamp frames at a default rate.
RAW_VIDEO_FORMATS = frozenset(("h264", "hevc", "vvc", "mpegvideo", "m4v", "cavsvideo", "avs2", "avs3", "vc1", "obu"))
# Where a frame can be found by its timestamp: containers with a sample table or cues, and codecs
# whose every packet is one shown frame (no field pictures, no invisible frames of their own).
SEEKABLE_FORMATS = frozenset(("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm"))
SEEKABLE_CODECS = frozenset(
    ("h264", "hevc", "av1", "vp9", "prores", "dnxhd", "mjpeg", "ffv1", "png", "rawvideo", "utvideo", "qtrle")
)


@dataclass
class Frame:
    index: int  # position in the processed range, from 0
    pts: int  # output timestamp in the source's time base
    duration: int
    pixels: np.ndarray | None  # (H,W,3) uint8 or uint16; None for frames an earlier run did
    repaired: bool = False
    alpha: np.ndarray | None = None  # (H,W) of the pixels' dtype: transparency, passed through untouched


class _SeekMissedError(Exception):
    """The demuxer's seek landed past the frame sought."""


@dataclass(frozen=True)
class Seek:
    """Where decoding may start for the frame ``index`` of the processed range: the demuxer seeks
    to ``key`` (a keyframe's decode time, at or before the frame), the frames before ``pts`` are
    decoded and dropped, and ``shift`` is what the range's first frame subtracts (``--start``)."""

    index: int
    pts: int
    key: int
    shift: int


@dataclass(frozen=True)
class SeekIndex:
    """The processed range's frames by timestamp and its keyframes, from one pass of the demuxer
    (no decoding): so a segment or a resumed run starts at the keyframe before its first frame
    instead of decoding the video from its start, as ffms2 and L-SMASH index a file for
    frame-exact seeking."""

    pts: tuple[int, ...]  # the range's frames, in presentation order
    keys: tuple[tuple[int, int], ...]  # (pts, decode time) of each keyframe, by pts
    shift: int

    def at(self, index: int) -> Seek | None:
        """How to start at frame ``index`` (None: at the first frame, or past the last)."""
        if index <= 0 or index >= len(self.pts):
            return None
        pts = self.pts[index]
        k = bisect.bisect_right(self.keys, (pts, math.inf)) - 1
        if k < 0:
            return None
        return Seek(index, pts, self.keys[k][1], self.shift)


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
        streams = [s for s in self.container.streams.video if not is_cover(s)]
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
        self.colour = Colour.of(ctx).filled(self._first_frame_colour)
        self.field_order = int(ctx.field_order or 0)  # AVFieldOrder: 2..5 interlaced, as the parser found it
        sar = self.stream.sample_aspect_ratio or ctx.sample_aspect_ratio
        self.sar: Fraction | None = Fraction(sar) if sar and sar != 1 else None
        if self.width <= 0 or self.height <= 0:
            self.container.close()
            raise VideoError(f"{path}: the video stream has no picture size", "the file may be damaged")
        # Transparency: in the pixel format, or (VP8/VP9 in WebM) in a side stream that only
        # libvpx's decoders read; FFmpeg's own would return opaque frames. The header's AlphaMode
        # alone says nothing: Chrome's MediaRecorder sets it and sends no alpha at all.
        self.decoder: Any = None
        if self.stream.metadata.get("alpha_mode") == "1" and ctx.name in _ALPHA_DECODERS and self._carries_alpha():
            self.decoder = av.CodecContext.create(_ALPHA_DECODERS[ctx.name], "r")
            self.pix_fmt = "yuva420p"
        self.alpha = has_alpha(self.pix_fmt)
        self.deep = bits(self.pix_fmt) > 8
        self.shift = 0  # subtracted from every timestamp: the first frame's time with --start
        self.display_matrix: list[int] | None = None  # rotation/flip, from the first decoded frame
        self.missing = 0  # frames the header promises past a cut (set when the packets run out)
        self.seek_misses = 0  # seeks that missed their frame (or failed before it): decoded from the start
        self.damaged = 0  # frames decoded with concealed errors, and those after them up to a keyframe (--repair)
        self.damaged_at: float | None = None  # the first one's time, in seconds
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
            if carried is not None and carried != fps and carried <= MAX_FPS:
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
        if carried > MAX_FPS:
            # A stream cut out of a container often keeps the container's time base in its VUI
            # timing (12800 "fps" for MP4's 1/12800), not its frame rate: FFmpeg assumes 25 too.
            warnings.warn(
                f"{self.path}: the raw stream's timing says {float(carried):g} fps, which is its time base, "
                f"not a frame rate; {DEFAULT_FPS} fps is assumed (pass --fps to set it)",
                UserWarning,
                3,
            )
            return Fraction(DEFAULT_FPS)
        return carried

    def _first_frame_colour(self) -> Colour | None:
        """What the decoder says of the first frame's colour, for a stream whose container does
        not (VP8 is BT.601 whatever its size; a VP9 or H.264 bitstream may say it): the pixels are
        converted, and the output tagged, as the decoder and so every player reads them."""
        with av.open(str(self.path)) as c, contextlib.suppress(av.error.FFmpegError, StopIteration):
            f = next(c.decode(c.streams[self.stream.index]))
            return Colour(int(f.colorspace), int(f.color_range), int(f.color_primaries), int(f.color_trc))
        return None

    def _carries_alpha(self, packets: int = 16) -> bool:
        """Whether the first ``packets`` video packets carry WebM's alpha side data (BlockAdditional)."""
        with av.open(str(self.path)) as c:
            for i, p in enumerate(c.demux(c.streams[self.stream.index])):
                if i >= packets:
                    break
                if any(sd.data_type == "matroska_block_additional" for sd in p.iter_sidedata()):
                    return True
        return False

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

    def seek_index(self) -> SeekIndex | None:
        """The frames' timestamps and keyframes, read by a second demuxer without decoding; None
        where frames cannot be found by timestamp (then a run decodes from the start): a raw
        stream, ``repair`` (a damaged packet's place is only known by decoding), WebM alpha, a
        container without sample tables, a codec whose packets are not one frame each, a packet
        without a timestamp, or packets that are decoded but not shown (an edit list's lead-in)."""
        formats = set(self.container.format.name.split(","))
        if self.restamp or self.repair or self.decoder is not None or not formats & SEEKABLE_FORMATS:
            return None
        if self.stream.codec_context.name not in SEEKABLE_CODECS:
            return None
        pts: list[int] = []
        keys: list[tuple[int, int]] = []
        with open_input(self.path) as container:
            try:
                for packet in container.demux(container.streams[self.stream.index]):
                    if not packet.size:
                        continue
                    if packet.pts is None or packet.is_corrupt or getattr(packet, "is_discard", False):
                        return None  # (an edit list's lead-in: decoded, never shown)
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        dts = packet.dts if packet.dts is not None else packet.pts
                        keys.append((packet.pts, min(dts, packet.pts)))
            except av.error.FFmpegError:
                return None
        pts.sort()
        if len(set(pts)) != len(pts) or not keys:
            return None
        tb = self.time_base
        lo = 0 if self.start is None else bisect.bisect_left(pts, self.start / tb - Fraction(1, 10**6) / tb)
        hi = len(pts) if self.end is None else bisect.bisect_left(pts, self.end / tb - Fraction(1, 10**6) / tb)
        frames = pts[lo:hi]
        if not frames:
            return None
        shift = frames[0] if self.start is not None else 0
        return SeekIndex(tuple(frames), tuple(sorted(keys)), shift)

    def decode(self, skip_below: int = 0, seek: Seek | None = None) -> Iterator[Frame]:
        """Frames in presentation order, RGB uint8 (uint16 for deeper sources).

        Frames with index < skip_below come without pixels (an earlier run did them). With
        ``seek`` (from ``seek_index``) the frames start at ``seek.index``, decoded from the
        keyframe before it; should the demuxer land past that frame, or decoding fail before it,
        the frames come from the start after all, so the numbering (and any error) is always the
        one decoding from the start gives.
        An undecodable packet raises VideoError, or with ``repair`` becomes a copy of the
        previous frame at the packet's timestamp, so the frame count and timing stay intact.
        """
        if seek is not None:
            started = False
            try:
                for frame in self._frames(skip_below, seek):
                    started = True
                    yield frame
                return
            except _SeekMissedError:
                pass
            except VideoError:  # before the frame sought (a leading picture of an open GOP, say):
                if started:  # decoding from the start says whether the file is at fault
                    raise
            index = self.stream.index  # read before closing: a closed container's streams are gone
            self.container.close()  # start again from a fresh demuxer
            self.container = open_input(self.path)
            self.stream = self.container.streams[index]
            self.stream.thread_type = "SLICE" if self.repair else "AUTO"
            self.seek_misses += 1
        yield from self._frames(skip_below, None)

    def _frames(self, skip_below: int, seek: Seek | None) -> Iterator[Frame]:
        tb = self.demux_time_base if self.restamp else self.time_base  # the packets' own
        if seek is not None:
            self.container.seek(seek.key, stream=self.stream, backward=True, any_frame=False)
        elif self.start and not self.restamp:  # a raw stream cannot seek by time: it is read from the start
            self.container.seek(int(self.start / tb), stream=self.stream, backward=True, any_frame=False)
        lost: list[int] = []  # timestamps of undecodable packets, as a heap
        state: dict[str, Any] = {"index": 0, "last": None, "prev": None, "first": None, "n": 0, "spoilt": False}
        default_duration = max(1, round(1 / (self.rate * tb)))
        self.missing = 0
        self.damaged, self.damaged_at = 0, None
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
                    # a damaged frame since the last keyframe: the frames after it refer to it
                    self._note_damage(f, tb, state["spoilt"])
                    state["spoilt"] = bool(f.is_corrupt or (state["spoilt"] and not f.key_frame))
                    yield f.pts, int(f.duration or 0), f, False
            while lost:
                yield heapq.heappop(lost), 0, None, True
            self._check_length(end, default_duration)
            if self.damaged:
                warnings.warn(
                    f"{self.path}: {self.damaged} frame(s) from {self.damaged_at:.3f} s on were decoded from damaged "
                    "data and are kept as the decoder mended them",
                    UserWarning,
                    stacklevel=2,
                )

        for pts, duration, f, repaired in decoded():
            if seek is not None and state["first"] is None:  # decoding up to the sought frame
                if pts is None or pts > seek.pts:
                    raise _SeekMissedError
                if pts < seek.pts:
                    continue
                state["first"], state["index"], self.shift = pts, seek.index, seek.shift
            if f is not None:
                if (f.width, f.height) != (self.width, self.height):
                    raise VideoError(
                        f"{self.path}: the picture size changes from {self.width}x{self.height} to "
                        f"{f.width}x{f.height} at {float((pts or 0) * tb):.3f} s",
                        "split the video where the size changes",
                    )
                if state["prev"] is None:
                    self.display_matrix = display_matrix(f)
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
        if seek is not None and state["first"] is None:
            raise _SeekMissedError  # the packets ran out before the frame sought

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

    def _note_damage(self, frame: Any, tb: Fraction, spoilt: bool) -> None:
        """A frame the decoder had to conceal errors in (FFmpeg flags it corrupt), or one that
        refers to such a frame (up to the next keyframe), is an error, or with ``repair`` counted."""
        if not (frame.is_corrupt or (spoilt and not frame.key_frame)):
            return
        when = float((frame.pts or 0) * tb)
        if not self.repair:
            raise VideoError(
                f"{self.path}: damaged video data near {when:.3f} s: the decoder had to conceal errors "
                "(the file is corrupt)",
                "pass --repair to keep the frames as the decoder mends them; add --resume to reuse the frames done",
            )
        self.damaged += 1
        if self.damaged_at is None:
            self.damaged_at = when

    def check_complete(self) -> None:
        """Before any decoding: a file cut short (its packets end before its header says) is an
        error now, not after the frames before the cut are deblurred; with ``repair`` the decode
        says it. Reads the packets (no decoding): a few seconds for gigabytes."""
        if self.repair or self._header_end() is None:
            return
        tb = self.demux_time_base if self.restamp else self.time_base
        default_duration = max(1, round(1 / (self.rate * tb)))
        end = None
        with open_input(self.path) as container:
            try:
                for packet in container.demux(container.streams[self.stream.index]):
                    if packet.size and packet.pts is not None:
                        end = max(end or 0, packet.pts + (packet.duration or default_duration))
            except av.error.FFmpegError as e:
                raise VideoError(
                    f"{self.path}: the container is damaged ({e.strerror or e})",
                    "pass --repair to keep what can be read",
                ) from None
        self._check_length(end, default_duration)

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
            interpolation=SWS_FLAGS,
        )
        arr: np.ndarray = rgb.to_ndarray()
        if self.alpha and frame.format.name in YUVA8:  # the plane itself: exact, not via swscale
            arr[:, :, 3] = alpha_view(frame)
        return arr


def is_cover(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


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


def display_matrix(frame: Any) -> list[int] | None:
    """The display matrix (rotation/flip) the decoder attaches to a frame, as 9 ints."""
    sd: Any
    for sd in frame.side_data:
        if str(sd.type).endswith("DISPLAYMATRIX"):
            return list(struct.unpack("<9i", bytes(sd)[:36]))
    return None
