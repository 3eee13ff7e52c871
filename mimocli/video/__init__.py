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

A run's decisions are made once, before any frame is deblurred, into a frozen VideoPlan (the
input probed once: timing, start shift, rotation, seek index; the output streams; the network's
settings, every "auto" resolved); the local run and a Ray cluster's replicas run the same
function of it (jobs.run_segments), and the muxer reads it.

The modules, one concern each, imported in this order and never back: formats (pixel formats,
colour), options (what a run is asked and what it did), source (a video file), folder (a folder
of frames; either kind of source), encoding (codec, pixel format, options), segments (the work
folder), pipeline (the three threads), plan (the frozen plan and the probe), jobs (segments of
a plan), mux (the output file), png (frames out as PNG files) and run (deblur_video,
plan_video). None of them imports the cluster code: an executor comes in as a value
(run.SegmentExecutor).
"""

from .encoding import CONTAINERS, choose_pix_fmt, resolve_codec
from .folder import open_source
from .options import VideoOptions, VideoSummary
from .plan import VideoPlan
from .run import SegmentExecutor, deblur_video, plan_video, preflight, recorded_choices
from .segments import WorkDir

__all__ = [
    "CONTAINERS",
    "SegmentExecutor",
    "VideoOptions",
    "VideoPlan",
    "VideoSummary",
    "WorkDir",
    "choose_pix_fmt",
    "deblur_video",
    "open_source",
    "plan_video",
    "preflight",
    "recorded_choices",
    "resolve_codec",
]
