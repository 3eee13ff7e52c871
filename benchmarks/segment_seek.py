"""What a segment job (`--ray`) or a resumed run spends decoding before its first frame: from the
video's start (as every segment job did before the seek index) against a seek to the keyframe
before the segment.

    python benchmarks/segment_seek.py [--loops 20] [--keyint 250] [--repeat 3]

The video is the real 1280x720 REDS clip in ../shared/data/video, its 48 frames played forwards
and backwards ``--loops`` times, encoded as H.264 with x264's default keyframe interval (250) as a
camera or an editor writes it. Each segment is --checkpoint's default 120 frames; a job's time is
from opening the file to the segment's last frame decoded to RGB (the network excluded). The total
is what all the segment jobs of the video spend decoding; without seeking it grows with the square
of the video's length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mimocli.settings import DEFAULT_CHECKPOINT  # noqa: E402
from mimocli.video.source import VideoSource  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "video" / "reds_020_blur_48f.mp4"


def make_video(path: Path, loops: int, keyint: int) -> int:
    """The clip back and forth ``loops`` times as H.264 (CRF 18, x264 defaults otherwise); frames."""
    with av.open(str(CLIP)) as src:
        frames = [f.to_ndarray(format="yuv420p") for f in src.decode(video=0)]
    order = (frames + frames[::-1]) * (loops // 2) + (frames if loops % 2 else [])
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=24)
        v.width, v.height, v.pix_fmt = 1280, 720, "yuv420p"
        v.options = {"crf": "18", "preset": "veryfast", "x264-params": f"keyint={keyint}"}
        for i, y in enumerate(order):
            frame = av.VideoFrame.from_ndarray(y, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            out.mux(v.encode(frame))
        out.mux(v.encode())
    return len(order)


def job(path: Path, first: int, seek: bool) -> float:
    """Seconds to decode segment ``first``'s frames to RGB, the way a segment job does."""
    t0 = time.perf_counter()
    source = VideoSource(path)
    start = first * DEFAULT_CHECKPOINT
    where = source.seek_index().at(start) if seek and start else None  # type: ignore[union-attr]
    for f in source.decode(start, where):
        if f.index >= start + DEFAULT_CHECKPOINT:
            break
    source.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=20)
    ap.add_argument("--keyint", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"needs {CLIP}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        n = make_video(path, args.loops, args.keyint)
        segments = -(-n // DEFAULT_CHECKPOINT)
        t0 = time.perf_counter()
        index = VideoSource(path).seek_index()
        indexing = time.perf_counter() - t0
        assert index is not None
        print(
            f"{n} frames of 1280x720 H.264 (keyframe every {args.keyint}), {segments} segments of "
            f"{DEFAULT_CHECKPOINT}; seek index: {indexing:.3f} s ({len(index.keys)} keyframes)"
        )
        print("| segment | from the start s | seeking s | ratio |")
        print("|---:|---:|---:|---:|")
        totals = {False: 0.0, True: 0.0}
        for k in range(segments):
            t = {s: statistics.median(job(path, k, s) for _ in range(args.repeat)) for s in (False, True)}
            for s in t:
                totals[s] += t[s]
            print(f"| {k} | {t[False]:.2f} | {t[True]:.2f} | {t[False] / t[True]:.1f} |")
        print(f"| all {segments} | {totals[False]:.1f} | {totals[True]:.1f} | {totals[False] / totals[True]:.1f} |")


if __name__ == "__main__":
    main()
