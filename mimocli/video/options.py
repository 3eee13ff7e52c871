"""What a video run is asked to do (VideoOptions) and what it did (VideoSummary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimocli.settings import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from mimocli.cluster import Cluster
    from mimocli.engine import Deblurrer

    from .source import Source

ProgressFn = Callable[[int, int | None], None]


# -- what a run does ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoOptions:
    """How to encode and what to process. None means: from the input or the output's extension."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
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
    tile: int = 0  # the tile side the frames went through the network in (0: whole)
    streams_copied: int = 0
    retries: int = 0  # segment jobs a cluster ran again after their worker died
    seconds: float = 0.0
    fps: float = 0.0  # deblurred frames per second of this run, end to end
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0
    scales: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoRun:
    """The parts of one run, as the writers and the pipeline share them. ``deblurrer`` is the
    run's own, settled for its frame size and batch (Deblurrer.for_run)."""

    source: Source
    output: Path
    deblurrer: Deblurrer | None  # None: the cluster's replicas run the network
    options: VideoOptions
    summary: VideoSummary
    on_progress: ProgressFn | None = None
    cluster: Cluster | None = None

    def settle(self) -> Deblurrer:
        """Settle the tile and compilation once for this run's frames; the caller's Deblurrer stays as it was."""
        d = self.deblurrer
        assert d is not None
        self.deblurrer = d.for_run(self.source.total, self.source.height, self.source.width, d.config.batch)
        self.summary.tile = self.deblurrer.tile or 0
        return self.deblurrer
