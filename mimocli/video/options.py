"""What a video run is asked to do (VideoOptions) and what it did (VideoSummary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from mimocli.settings import DEFAULT_CHECKPOINT, ProgressFn

__all__ = ["ProgressFn", "VideoOptions", "VideoSummary"]


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
    png_frames: bool = False  # write a folder of PNG frames instead of a video (--frames)
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
    damaged: int = 0  # frames decoded from damaged data, kept as the decoder mended them (--repair)
    width: int = 0
    height: int = 0
    codec: str = ""
    pix_fmt: str = ""
    tile: int = 0  # the tile side the frames went through the network in (0: whole)
    settings: dict[str, Any] = field(default_factory=dict)  # how the network ran: device, precision, tile...
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
