"""What runs on a Ray worker: a model replica (an actor) that loads the weights once, from the
object store, checked by sha256, and runs the jobs a local run runs (photos.deblur_image,
evaluate.evaluate_pair, the video pipeline into a SegmentWriter) on inputs that come as bytes,
returning the outputs as bytes. The driver side is mimocli.cluster; both need the ray extra."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from .errors import ImageError, IntegrityError, MimoError, VideoError
from .evaluate import Pair
from .paths import Job, targets
from .photos import PhotoOptions
from .settings import RunSettings


class Replica:
    """One model replica (a Ray actor): the weights loaded once, then job after job."""

    def __init__(self, sha256: str, ensemble: bool, run: RunSettings, cpus: float) -> None:
        import torch

        from .device import reuse_freed_memory

        self.sha256, self.ensemble, self.run = sha256, ensemble, run
        torch.set_num_threads(run.threads or max(1, int(cpus)))
        if run.reuse_memory and run.device in ("cpu", "auto") and not torch.cuda.is_available():
            reuse_freed_memory()
        self._deblurrer: Any = None
        self.tmp = Path(tempfile.mkdtemp(prefix="mimo-worker-"))
        self.videos: dict[str, Path] = {}

    def deblurrer(self, weights: list[Any]) -> Any:
        """The replica's Deblurrer, its weights fetched from the object store on first use:
        ``weights`` is [the ObjectRef of the safetensors bytes], checked against the sha256."""
        if self._deblurrer is None:
            from safetensors.torch import load

            from .checkpoints import build_model
            from .engine import Deblurrer

            blob = ray.get(weights[0])
            digest = hashlib.sha256(blob).hexdigest()
            if digest != self.sha256:
                raise IntegrityError(
                    f"the weights reached this worker with sha256 {digest[:12]}…, not {self.sha256[:12]}…"
                )
            model, _ = build_model(load(blob), "the weights sent by the driver")
            model.ensemble = self.ensemble
            self._deblurrer = Deblurrer(model, self.run)
        return self._deblurrer

    def identity(self) -> tuple[str, int]:
        """(actor id, process id): a new process id for the same actor means it was restarted."""
        return str(ray.get_runtime_context().get_actor_id()), os.getpid()

    def load(self, weights: list[Any]) -> None:
        """Load the weights now (the driver waits for this, to report a replica that cannot)."""
        self.deblurrer(weights)

    def _tagged(self, index: int, value: Any) -> dict[str, Any]:
        actor, pid = self.identity()
        return {"actor": actor, "pid": pid, "value": (index, value)}

    def photo(
        self, weights: list[Any], index: int, job: Job, data: bytes, options: PhotoOptions, label: str
    ) -> dict[str, Any]:
        """photos.deblur_image on a copy of the input in a folder of its own; the outputs come back
        as bytes by their real paths, errors with the real paths in their text."""
        from .photos import deblur_image

        folder = Path(tempfile.mkdtemp(dir=self.tmp))
        src, out = folder / "in" / job.input.name, folder / "out"
        src.parent.mkdir()
        src.write_bytes(data)
        here = Job(
            src,
            out / job.output.name,
            {s: out / p.name for s, p in job.scales.items()},
            None,
            None if job.compare is None else out / job.compare.name,
        )
        real = dict(zip(map(str, targets(here, True, True)), map(str, targets(job, True, True)), strict=True))
        real[str(src)] = str(job.input)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = deblur_image(
                    here, self.deblurrer(weights), replace(options, overwrite=True, skip_existing=False), label=label
                )
            files = {real[str(p)]: p.read_bytes() for p in targets(here, options.save_scales, options.compare)}
            said = [_unlocal(str(w.message), real) for w in caught]
            return self._tagged(index, (replace(result, job=job), files, said))
        except MimoError as e:
            return self._tagged(index, type(e)(_unlocal(e.message, real), e.hint))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def pair(self, weights: list[Any], index: int, pair: Pair, blur: bytes, sharp: bytes) -> dict[str, Any]:
        from .evaluate import evaluate_pair

        folder = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            here = Pair(pair.name, folder / "blur" / pair.blur.name, folder / "sharp" / pair.sharp.name)
            for p, data in ((here.blur, blur), (here.sharp, sharp)):
                p.parent.mkdir()
                p.write_bytes(data)
            real = {str(here.blur): str(pair.blur), str(here.sharp): str(pair.sharp)}
            try:
                return self._tagged(index, evaluate_pair(here, self.deblurrer(weights)))
            except ImageError as e:
                return self._tagged(index, ImageError(_unlocal(e.message, real), e.hint))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def settle(self, weights: list[Any], frames: int | None, height: int, width: int) -> tuple[int, dict[str, object]]:
        """The tile and engine settings this replica would run a video with (for the manifest)."""
        d = self.deblurrer(weights)
        run = d.for_run(frames, height, width, d.config.batch)
        return run.tile or 0, run.settings

    def segment(
        self, weights: list[Any], video: VideoJob, pieces: list[Any], first: int, last: bool, seek: Any = None
    ) -> dict[str, Any]:
        """The segment job: frames from segment ``first`` on (to the end if ``last``, else one
        segment) deblurred and encoded, as the segment files' bytes by index. ``pieces`` are the
        ObjectRefs of the video's bytes, written to a local file once per video; ``seek`` (a
        video.source.Seek, or None) is where decoding may start, at the keyframe before the
        segment, instead of at the video's start."""
        from .video.options import VideoRun, VideoSummary
        from .video.pipeline import run_pipeline
        from .video.run import open_source
        from .video.segments import SegmentWriter, WorkDir

        src = self.videos.get(video.sha256)
        if src is None:
            src = self.tmp / video.sha256[:16] / video.name
            src.parent.mkdir(exist_ok=True)
            part, digest = src.with_name(src.name + ".part"), hashlib.sha256()
            with part.open("wb") as f:
                for ref in pieces:  # one piece in memory at a time
                    piece = ray.get(ref)
                    digest.update(piece)
                    f.write(piece)
            if digest.hexdigest() != video.sha256:
                part.unlink()
                damaged = VideoError(f"{video.shown}: arrived damaged on a worker", "run the command again")
                return self._tagged(first, damaged)
            part.replace(src)
            self.videos[video.sha256] = src
        work = WorkDir(self.tmp / f"segments-{os.getpid()}-{first}" / "out.mkv")
        work.path.mkdir(parents=True, exist_ok=True)
        try:
            source = open_source(src, video.options)
        except MimoError as e:
            return self._tagged(first, type(e)(_unlocal(e.message, {str(src): video.shown}), e.hint))
        try:
            deblurrer = copy.copy(self.deblurrer(weights))
            deblurrer.tile = video.tile  # as the driver recorded it: every segment alike
            run = VideoRun(
                source,
                work.path,
                deblurrer.for_run(source.total, source.height, source.width),
                video.options,
                VideoSummary(video.shown, ""),
            )
            checkpoint = video.options.checkpoint
            writer = SegmentWriter(work, video.specs, checkpoint, first)
            run_pipeline(run, first * checkpoint, writer, None if last else (first + 1) * checkpoint, seek)
            files = {i: work.segment(i).read_bytes() for i in range(first, writer.segments)}
            s = run.summary
            counts = {
                "deblurred": s.deblurred,
                "repaired": s.repaired,
                "missing": getattr(source, "missing", 0) if last else 0,
            }
            times = {"decode": s.decode_seconds, "infer": s.infer_seconds, "encode": s.encode_seconds}
            return self._tagged(first, (files, counts, times))
        except MimoError as e:
            return self._tagged(first, type(e)(_unlocal(e.message, {str(src): video.shown}), e.hint))
        finally:
            source.close()
            shutil.rmtree(work.path.parent, ignore_errors=True)


def _unlocal(text: str, real: dict[str, str]) -> str:
    """A worker's message with its temporary paths replaced by the files they stand for."""
    for here, there in sorted(real.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(here, there)
    return text


@dataclass(frozen=True)
class VideoJob:
    """What every segment job of one video shares."""

    name: str  # the input's file name
    shown: str  # the input's path, for messages
    sha256: str
    options: Any  # VideoOptions
    specs: list[Any]  # StreamSpec per output stream
    tile: int
