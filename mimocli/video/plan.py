"""A video run's decisions as one frozen value: what the input is (probed once), what is written
and how, and how the network runs. Every executor (the local one here, the Ray replicas) and the
muxer read it; nothing reads values that a decoder happened to leave behind."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimocli.settings import RunSettings

from .encoding import StreamSpec
from .folder import Source, open_source
from .options import VideoOptions
from .source import Seek, SeekIndex, VideoSource
from .streams import StreamChoices

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True)
class VideoPlan:
    """One video run, decided: the input's facts, the output streams and the network's settings.

    ``shift``: what every output timestamp subtracts (the first frame's time with --start), and
    ``display_matrix``: the rotation/flip of the input's first frame; both from one probe of the
    input, so the muxer never depends on a decoder having run. ``seeks``: where each frame's
    decoding may start (None where frames cannot be found by timestamp: decode from the start).
    ``run``: the network's settings, every choice made (precision, tile...): what a worker or a
    resumed run is given, so that none of them decides again. ``streams``: what the main output
    keeps of the input's other streams, chapters and timecode (and what it leaves out).
    """

    input: Path
    options: VideoOptions
    width: int
    height: int
    total: int | None  # frames in the processed range by the header (None: unknown)
    time_base: Fraction
    shift: int
    display_matrix: tuple[int, ...] | None
    seeks: SeekIndex | None
    outputs: tuple[Path, ...]
    specs: tuple[StreamSpec, ...]
    run: RunSettings
    streams: StreamChoices = StreamChoices()

    @property
    def checkpoint(self) -> int:
        return self.options.checkpoint

    @property
    def segment_count(self) -> int | None:
        """Segments of ``checkpoint`` frames the range is cut into (None: its length is unknown)."""
        return None if self.total is None else max(1, -(-self.total // self.checkpoint))

    def seek(self, frame: int) -> Seek | None:
        """Where decoding may start for ``frame`` (None: at the start)."""
        return self.seeks.at(frame) if self.seeks is not None and frame else None


@dataclass(frozen=True)
class Probe:
    """What decoding would tell about the input's start, learnt before any work."""

    shift: int
    display_matrix: tuple[int, ...] | None
    seeks: SeekIndex | None


def probe(source: Source, options: VideoOptions, index: bool) -> Probe:
    """The start shift and display matrix of ``source``'s range, by decoding its first frame
    with a decoder of its own (the run's is left untouched); with ``index``, the seek index too
    (one pass of the demuxer, no decoding: what segment jobs and resumed runs start from)."""
    if not isinstance(source, VideoSource):
        return Probe(0, None, None)
    seeks = source.seek_index() if index else None
    first = open_source(source.path, options)
    try:
        assert isinstance(first, VideoSource)
        frames: Iterator[Any] = first.decode(1)  # the first frame without its pixels: nothing converted
        next(frames, None)
        frames.close()  # type: ignore[attr-defined]
        matrix = tuple(first.display_matrix) if first.display_matrix else None
        shift = seeks.shift if seeks is not None else first.shift
    finally:
        first.close()
    return Probe(shift, matrix, seeks)
