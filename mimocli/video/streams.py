"""The input's other streams (audio, subtitles, data, attachments), its chapters and timecode:
what the output keeps and how, decided when the run is planned, never found out by the muxer
after the frames are done. Each stream is tried by muxing it into an in-memory file of the
output's format (what the muxer takes, not a table of what it ought to take)."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av

from mimocli.errors import VideoError

if TYPE_CHECKING:
    from av.container.core import Chapter as PyAVChapter

Chapter = tuple[int, int, Fraction, tuple[tuple[str, str], ...]]  # start, end, time base, metadata
PROBE_PACKETS = 2000  # packets read looking for a stream's first one to try: a subtitle may come late


@dataclass(frozen=True)
class StreamChoices:
    """``copy``: the input streams copied as they are, by index. ``chapters``: written by the
    output's muxer (an MP4/MOV input's chapter track is one of them, not a stream to copy: the
    muxer makes its own). ``timecode``: the video stream's timecode tag ("01:00:00:00"), of the
    first output frame; MOV and MP4 muxers write a timecode track from it, Matroska keeps the tag.
    ``dropped``: what the output's container cannot hold, for the one warning that names it."""

    copy: tuple[int, ...] = ()
    chapters: tuple[Chapter, ...] = ()
    timecode: str | None = None
    dropped: tuple[str, ...] = ()

    def chapter_dicts(self) -> list[PyAVChapter]:
        """As PyAV's ``set_chapters`` takes them."""
        return [
            {"id": i + 1, "start": s, "end": e, "time_base": tb, "metadata": dict(meta)}
            for i, (s, e, tb, meta) in enumerate(self.chapters)
        ]


def describe(stream: Any) -> str:
    """ "data stream #2 (timecode)", as the warnings and errors name a stream."""
    name = stream.codec_context.name if stream.codec_context is not None else None
    handler = stream.metadata.get("handler_name", "").strip()
    return f"{stream.type} stream #{stream.index} ({name or handler or 'unknown codec'})"


def plan_streams(source: Any, fmt: str, cut: float | None, end: float | None, skipped_frames: int) -> StreamChoices:
    """What the output of container ``fmt`` keeps of ``source``'s (a VideoSource) other streams,
    for a range from ``cut`` to ``end`` seconds (None: its start, its end) that begins
    ``skipped_frames`` frames into the video. Raises VideoError for an audio, subtitle or second
    video stream the format cannot hold: dropping sound silently is not an option."""
    container, video = source.container, source.stream
    chapters = _chapters(container, cut, end)
    copy: list[int] = []
    dropped: list[str] = []
    timecode = video.metadata.get("timecode")
    for s in container.streams:
        if s.index == video.index:
            continue
        if _is_timecode(s):
            timecode = timecode or s.metadata.get("timecode")
            continue
        if _is_chapter_track(s, container):
            continue
        why = _refused(source.path, s, fmt)
        if why is None:
            copy.append(s.index)
        elif s.type in ("data", "attachment"):
            dropped.append(f"{describe(s)}: {fmt} cannot hold it")
        else:
            better = "write .mkv, which holds most streams" if fmt != "matroska" else "convert that stream first"
            raise VideoError(f"{source.path}: its {describe(s)} cannot be stored in {fmt} ({why})", better)
    if chapters and (why := _chapters_refused(fmt, chapters)) is not None:
        dropped.append(f"{len(chapters)} chapters: {fmt} cannot hold them ({why})")
        chapters = ()
    if timecode is not None and skipped_frames:
        timecode = advance_timecode(timecode, skipped_frames, source.rate)
    return StreamChoices(tuple(copy), chapters, timecode, tuple(dropped))


def _is_timecode(s: Any) -> bool:
    """A MOV/MP4 timecode track (tmcd): FFmpeg exposes it as a data stream tagged with its start."""
    return bool(s.type == "data" and ("timecode" in s.metadata or s.metadata.get("handler_name") == "TimeCodeHandler"))


def _is_chapter_track(s: Any, container: Any) -> bool:
    """The text track MP4/MOV keep chapter titles in (FFmpeg reads it as the chapters too)."""
    formats = set(container.format.name.split(","))
    return bool(formats & {"mov", "mp4"} and s.type in ("data", "subtitle") and _has_chapters(container))


def _has_chapters(container: Any) -> bool:
    try:
        return bool(container.chapters())
    except (AttributeError, ValueError, av.error.FFmpegError):
        return False


def _chapters(container: Any, cut: float | None, end: float | None) -> tuple[Chapter, ...]:
    """The chapters within the range, their times shifted so that ``cut`` becomes 0."""
    if not _has_chapters(container):
        return ()
    kept: list[Chapter] = []
    for c in container.chapters():
        tb = Fraction(c["time_base"])
        start, stop = c["start"], c["end"]
        if cut is not None:
            shift = round(Fraction(cut) / tb)
            start, stop = max(0, start - shift), stop - shift
        if end is not None:
            stop = min(stop, round((Fraction(end) - Fraction(cut or 0)) / tb))
        if stop <= start:
            continue  # wholly outside the range
        meta = tuple(sorted((str(k), str(v)) for k, v in (c.get("metadata") or {}).items()))
        kept.append((int(start), int(stop), tb, meta))
    return tuple(kept)


def _refused(path: Any, s: Any, fmt: str) -> str | None:
    """Why the muxer of ``fmt`` refuses stream ``s`` (its header or its first packet), or None."""
    with av.open(str(path), metadata_errors="replace") as src:
        template = src.streams[s.index]

        def mux_first_packet(out: Any) -> None:
            o = out.add_stream_from_template(template, opaque=True)
            out.start_encoding()
            for i, p in enumerate(src.demux(template)):
                if i >= PROBE_PACKETS:
                    break
                if p.size:
                    p.stream = o
                    out.mux(p)
                    break

        return _mux_refused(fmt, mux_first_packet)


def _chapters_refused(fmt: str, chapters: tuple[Chapter, ...]) -> str | None:
    """Why the muxer of ``fmt`` refuses chapters, or None."""

    def mux_chapters(out: Any) -> None:
        out.add_stream("libopus" if fmt == "webm" else "aac", rate=48000)  # a muxer wants one stream
        out.set_chapters(StreamChoices(chapters=chapters).chapter_dicts())
        out.start_encoding()

    return _mux_refused(fmt, mux_chapters)


def _mux_refused(fmt: str, write: Callable[[Any], None]) -> str | None:
    """What the muxer of ``fmt`` says against ``write(output)`` into memory (header, packets and
    trailer), or None when it takes it."""
    out = av.open(io.BytesIO(), "w", format=fmt)
    try:
        write(out)
        out.close()
    except (ValueError, av.error.FFmpegError) as e:
        with contextlib.suppress(ValueError, av.error.FFmpegError):
            out.close()
        return _first_line(e)
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


_TIMECODE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.,])(\d{2,3})$")


def advance_timecode(timecode: str, frames: int, rate: Fraction) -> str:
    """``timecode`` (SMPTE "HH:MM:SS:FF", or drop-frame "HH:MM:SS;FF" at 29.97/59.94) moved on
    by ``frames`` frames at ``rate``: the timecode of the first frame of a cut. One that is not
    SMPTE comes back as it was."""
    m = _TIMECODE.match(timecode.strip())
    if not m or frames <= 0:
        return timecode
    hh, mm, ss, sep, ff = int(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])
    fps = round(rate)
    if fps <= 0:
        return timecode
    drop = sep in ";," and fps % 30 == 0  # drop-frame: two frame numbers a minute skipped per 30 fps
    skip = fps // 15 if drop else 0
    minutes = 60 * hh + mm
    n = (3600 * hh + 60 * mm + ss) * fps + ff - skip * (minutes - minutes // 10) + frames
    if drop:
        per_ten = fps * 600 - skip * 9
        per_minute = fps * 60 - skip
        tens, rest = divmod(n, per_ten)
        n += skip * 9 * tens + (skip * ((rest - skip) // per_minute) if rest > skip else 0)
    ff, seconds = n % fps, n // fps
    return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{sep}{ff:02d}"
