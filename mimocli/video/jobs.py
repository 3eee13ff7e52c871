"""The work of a video run, as one function of the plan: deblur and encode segments. The local
run calls it once, from the first unfinished segment to the end, with one continuous decoder; a
Ray replica calls it once per segment job (segment_job), on its own copy of the input."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .folder import Source, open_source
from .options import ProgressFn, VideoSummary
from .pipeline import run_pipeline
from .plan import VideoPlan
from .segments import SegmentWriter, WorkDir
from .source import VideoSource

if TYPE_CHECKING:
    from mimocli.engine import Deblurrer


def run_segments(
    plan: VideoPlan,
    source: Source,
    deblurrer: Deblurrer,
    work: WorkDir,
    first: int,
    last: int | None,
    summary: VideoSummary,
    on_progress: ProgressFn | None = None,
) -> int:
    """Segments ``first`` to ``last`` (exclusive; None: to the end of the range) of ``plan``:
    their frames decoded from ``source`` (starting at the keyframe before the first one, where the
    plan's seek index knows it), deblurred by ``deblurrer`` (settled for the plan: for_run with
    the plan's tile) and encoded into segment files in ``work``. Returns how many segments, from
    the first, exist in ``work`` afterwards."""
    skip = first * plan.checkpoint
    writer = SegmentWriter(work, list(plan.specs), plan.checkpoint, first)
    until = None if last is None else last * plan.checkpoint
    run_pipeline(source, deblurrer, plan.checkpoint, summary, writer, skip, until, plan.seek(skip), on_progress)
    return writer.segments


@dataclass
class SegmentResult:
    """What a segment job hands back: the segment files' bytes by index, and its counts and times."""

    files: dict[int, bytes]
    deblurred: int = 0
    repaired: int = 0
    missing: int = 0  # frames the cut-short input's header promises (the job that ran to the end)
    damaged: int = 0  # frames decoded from damaged data (--repair)
    times: dict[str, float] = field(default_factory=dict)


def segment_job(plan: VideoPlan, path: Path, deblurrer: Deblurrer, first: int, last: bool) -> SegmentResult:
    """Segment ``first`` of ``plan`` (with ``last``, every segment from it to the end), read
    from ``path`` (this machine's copy of the input), in a work folder of its own that is
    removed afterwards. Raises VideoError as a local run would."""
    source = open_source(path, plan.options)
    tmp = Path(tempfile.mkdtemp(prefix=f"mimo-segment-{os.getpid()}-{first}-"))
    work = WorkDir(tmp / "out.mkv")
    work.path.mkdir()
    try:
        summary = VideoSummary(str(plan.input), "")
        run = deblurrer.for_run(plan.total, plan.height, plan.width, plan.run.batch, tile=int(plan.run.tile))
        done = run_segments(plan, source, run, work, first, None if last else first + 1, summary)
        return SegmentResult(
            {i: work.segment(i).read_bytes() for i in range(first, done)},
            summary.deblurred,
            summary.repaired,
            source.missing if last and isinstance(source, VideoSource) else 0,
            source.damaged if isinstance(source, VideoSource) else 0,
            {"decode": summary.decode_seconds, "infer": summary.infer_seconds, "encode": summary.encode_seconds},
        )
    finally:
        source.close()
        shutil.rmtree(tmp, ignore_errors=True)
