"""The mux: the segments and every other stream of the input (audio, subtitles, data,
attachments, chapters, metadata) into the output under a temporary name, renamed at the end."""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import os
import struct
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
from av.packet import PacketSideData, packet_sidedata_type_from_literal

from mimocli.atomic import atomic_write

from .encoding import CONTAINERS, StreamSpec
from .formats import has_alpha
from .plan import VideoPlan
from .segments import WorkDir, read_segment
from .source import VideoSource

if TYPE_CHECKING:
    from .folder import Source


def assemble(plan: VideoPlan, source: Source, work: WorkDir, segments: int) -> int:
    """Mux the segments (and the input's other streams, into the main output) under temporary
    names, then rename them all. Timing and rotation come from ``plan``; ``source`` gives the
    input's other streams. Returns how many streams were copied from the input."""
    copied = 0
    with contextlib.ExitStack() as stack:
        for k, (path, spec) in enumerate(zip(plan.outputs, plan.specs, strict=True)):
            f = stack.enter_context(atomic_write(path))
            fmt = CONTAINERS[path.suffix.lower()]
            n = _mux(f, fmt, plan, source if k == 0 else None, work, spec, k, segments)
            if k == 0:
                copied = n
                _keep_minor_version(f, fmt, source)
    return copied


def _keep_minor_version(file: Any, fmt: str, source: Source) -> None:
    """The input's MP4/MOV minor version beside its major brand (which the muxer keeps, see
    _muxer_options), written into the finished file's ftyp box in place: four bytes, no offset
    moves. The compatible brands stay the muxer's: they say what the file written conforms to."""
    if not isinstance(source, VideoSource) or fmt not in ("mp4", "mov"):
        return
    meta = source.container.metadata
    minor, brand = meta.get("minor_version", "").strip(), meta.get("major_brand", "").ljust(4)
    if not minor.isdigit() or int(minor) >= 1 << 32 or len(brand) != 4 or not brand.strip():
        return
    file.flush()
    head = os.pread(file.fileno(), 12, 0)  # (the temporary file is open for reading too)
    if head[4:8] == b"ftyp" and head[8:12] == brand.encode("latin-1", "replace"):
        os.pwrite(file.fileno(), struct.pack(">I", int(minor)), 12)


def _mux(
    file: Any,
    fmt: str,
    plan: VideoPlan,
    source: Source | None,
    work: WorkDir,
    spec: StreamSpec,
    k: int,
    segments: int,
) -> int:
    """Mux stream ``k`` of the segments, and with a VideoSource everything else it holds, into ``file``."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(file, "w", format=fmt, options=_muxer_options(source, fmt)))
        video: Any = out.add_stream(spec.codec, rate=spec.rate)
        spec.configure(video.codec_context)
        video.time_base = spec.time_base
        if has_alpha(spec.pix_fmt) and spec.codec in ("libvpx", "libvpx-vp9"):
            video.metadata["alpha_mode"] = "1"  # WebM's AlphaMode: players then read the alpha side stream
        others: Iterator[tuple[float, Any]] = iter(())
        copied = 0
        if isinstance(source, VideoSource):
            src = stack.enter_context(av.open(str(source.path), metadata_errors="replace"))
            out.metadata.update(_tags(src.metadata))
            vin = src.streams[source.stream.index]
            video.metadata.update(_tags(vin.metadata))
            video.disposition = vin.disposition
            if plan.display_matrix:
                video.set_display_matrix(list(plan.display_matrix))
            if plan.streams.timecode is not None:  # MOV/MP4 write a timecode track from it
                video.metadata["timecode"] = plan.streams.timecode
            streams = _copy_streams(src, out, plan.streams.copy)
            copied = len(streams)
            if plan.streams.chapters:
                out.set_chapters(plan.streams.chapter_dicts())
            if streams:
                cut = float(plan.shift * plan.time_base) if source.start is not None else None
                others = _other_packets(src, streams, cut, source.end)
        video_packets = _segment_packets(work, k, segments, spec.time_base, video)
        for _t, packet in heapq.merge(video_packets, others, key=lambda item: item[0]):
            out.mux(packet)
    return copied


def _muxer_options(source: Source | None, fmt: str) -> dict[str, str]:
    """Bit-exact muxing (no random Matroska segment UID, no muxing date), so that the same frames
    give the same file, whichever machine or run made them; and what the muxer takes from the
    input: an MP4/MOV's major brand (mp42, qt, a phone's own), which FFmpeg would otherwise
    replace by isom."""
    options = {"fflags": "+bitexact"}
    if not isinstance(source, VideoSource) or fmt not in ("mp4", "mov"):
        return options
    brand = source.container.metadata.get("major_brand", "").strip()
    return {**options, "brand": brand} if len(brand) == 4 and brand.isprintable() else options


def _tags(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata to carry over: all but what the muxer writes itself."""
    return {
        k: v
        for k, v in metadata.items()
        if k.lower() not in ("encoder", "duration", "major_brand", "minor_version", "compatible_brands")
    }


def _copy_streams(src: Any, out: Any, copy: tuple[int, ...]) -> dict[int, Any]:
    """Output streams for the input streams ``copy`` names (the plan found that the output's
    muxer takes each), by input index."""
    streams: dict[int, Any] = {}
    for i in copy:
        s = src.streams[i]
        o = out.add_stream_from_template(s, opaque=True)
        o.metadata.update(_tags(s.metadata))
        o.disposition = s.disposition
        streams[s.index] = o
    return streams


def _segment_packets(work: WorkDir, k: int, segments: int, tb: Fraction, stream: Any) -> Iterator[tuple[float, Any]]:
    last_dts: int | None = None
    for i in range(segments):
        _frames, records = read_segment(work.segment(i))
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
    packet that straddles it, and the packets before it that prime its decoder (preroll_packets), keep their
    true times, negative ones included, so that the muxer trims them (an MP4 edit list, Matroska's
    shift of every stream alike) rather than squeezing them onto 0 and shifting the sound."""
    before: dict[int, collections.deque[Any]] = {  # per audio stream: the packets that end before the cut
        i: collections.deque(maxlen=preroll_packets(src.streams[i])) for i in streams
    }
    for p in src.demux(*(src.streams[i] for i in streams)):
        if p.size == 0 and p.pts is None and p.dts is None:
            continue  # the demuxer's end-of-stream marker
        if p.is_corrupt:
            continue  # cut short where the file ends (--repair): a decoder would fail on it
        tb = p.time_base
        t = p.pts if p.pts is not None else p.dts
        audio = p.stream.type == "audio"
        if t is not None and cut is not None and float((t + (p.duration or 0)) * tb) <= cut:
            if audio:
                before[p.stream_index].append(p)
            continue
        if t is not None and end is not None and float(t * tb) >= end:
            continue
        primers = before[p.stream_index]
        while cut is not None and primers:
            yield _shifted(primers.popleft(), cut, streams)
        yield _shifted(p, cut, streams)


# Packets a decoder needs before the first sample it is to play right. MP3 frames borrow bits
# from up to 511 bytes of the frames before them (the bit reservoir: 3 frames at low rates) and
# overlap the one before by half a window; Opus asks for 80 ms (RFC 7845). Others need one.
PREROLL_PACKETS = {"mp3": 4, "mp3float": 4}
PREROLL_SECONDS = {"opus": 0.08}


def preroll_packets(stream: Any) -> int:
    """How many packets before a cut ``stream``'s decoder needs to get the first kept sample right."""
    name = stream.codec_context.name if stream.codec_context is not None else ""
    if name in PREROLL_SECONDS and stream.codec_context.frame_size and stream.codec_context.sample_rate:
        per_packet = stream.codec_context.frame_size / stream.codec_context.sample_rate
        return max(1, math.ceil(PREROLL_SECONDS[name] / per_packet))
    return PREROLL_PACKETS.get(name, 1)


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
