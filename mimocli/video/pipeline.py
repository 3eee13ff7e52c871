"""Three threads joined by bounded queues, the decoder, the caller's thread (inference in batches)
and the encoder, so that the processor running the network never waits for a codec."""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mimocli.tiling import SCALES

from .options import ProgressFn, VideoSummary
from .source import Frame, Seek

if TYPE_CHECKING:
    from mimocli.engine import Deblurrer

    from .folder import Source

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


def run_pipeline(
    source: Source,
    deblurrer: Deblurrer,
    checkpoint: int,
    summary: VideoSummary,
    sink: Any,
    skip: int = 0,
    until: int | None = None,
    seek: Seek | None = None,
    on_progress: ProgressFn | None = None,
) -> None:
    """decode thread -> (batched inference here) -> encode thread, through bounded queues: the
    frames of ``source`` from ``skip`` to ``until`` (exclusive; None: the end), deblurred by
    ``deblurrer`` (settled for the run: Deblurrer.for_run) in batches that never cross a
    multiple of ``checkpoint``, and handed to ``sink.add``; counts and times go into
    ``summary``. ``seek`` (for frame ``skip``, from the plan's seek index) starts decoding at the
    keyframe before that frame instead of at the video's start."""
    total = source.total
    stop = threading.Event()
    batch = deblurrer.config.batch
    size = 2 * batch + 2
    decoded, inferred = _Channel(size, stop), _Channel(size, stop)
    times = {"decode": 0.0, "encode": 0.0}

    def decode() -> None:
        try:
            it = source.decode(skip, seek)
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                times["decode"] += time.perf_counter() - t0
                if frame is None or (until is not None and frame.index >= until):
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
            full = len(pending) == batch
            boundary = pending and (pending[-1].index + 1) % checkpoint == 0
            if pending and (full or boundary or finished):
                t0 = time.perf_counter()
                outs = deblurrer.deblur_batch(np.stack([f.pixels for f in pending]))  # type: ignore[misc]
                summary.infer_seconds += time.perf_counter() - t0
                for i, f in enumerate(pending):
                    f.pixels = None  # let the decoded frame go
                    summary.repaired += f.repaired
                    if not inferred.put((f, {s: o[i] for s, o in zip(SCALES, outs, strict=True)})):
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
