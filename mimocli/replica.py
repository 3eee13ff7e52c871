"""What runs on a Ray worker: a model replica (an actor) that loads the weights once, from the
object store, checked by sha256, and runs the jobs a local run runs (photos.deblur_image,
evaluate.evaluate_pair, video.jobs.segment_job) on inputs that come as bytes, returning the
outputs as bytes. The driver side is mimocli.cluster; both need the ray extra."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from .errors import ImageError, IntegrityError, MimoError, VideoError
from .evaluate import Pair
from .paths import Job, targets
from .photos import PhotoOptions
from .settings import RunSettings


class Replica:
    """One model replica (a Ray actor): the weights loaded once, then job after job, each run
    with the settings the driver settled once (Cluster.settled): a replica never decides a
    precision or a tile for itself, except the one the driver asks to settle them."""

    def __init__(self, sha256: str, ensemble: bool, run: RunSettings, cpus: float) -> None:
        from .device import apply_process_settings, resolve_device

        self.sha256, self.ensemble, self.run = sha256, ensemble, run
        apply_process_settings(run, resolve_device(run.device), max(1, int(cpus)))
        self._model: Any = None
        self._deblurrers: dict[RunSettings, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="mimo-worker-"))
        self.videos: dict[str, Path] = {}

    def model(self, weights: list[Any]) -> Any:
        """The replica's model, its weights fetched from the object store on first use:
        ``weights`` is [the ObjectRef of the safetensors bytes, checked against the sha256; that
        of the driver's int8 model files, or None], the int8 model put into this machine's cache."""
        if self._model is None:
            from safetensors.torch import load

            from .checkpoints import build_model

            blob = ray.get(weights[0])
            digest = hashlib.sha256(blob).hexdigest()
            if digest != self.sha256:
                raise IntegrityError(
                    f"the weights reached this worker with sha256 {digest[:12]}…, not {self.sha256[:12]}…",
                    "run again; if it persists, check the cluster's object store (`ray status`)",
                )
            model, _ = build_model(load(blob), "the weights sent by the driver")
            model.ensemble = self.ensemble
            if len(weights) > 1 and weights[1] is not None:
                _install_int8(ray.get(weights[1]))
            self._model = model
        return self._model

    def deblurrer(self, weights: list[Any], run: RunSettings) -> Any:
        """The Deblurrer for ``run`` (settled by the driver: nothing is measured), built once."""
        if run not in self._deblurrers:
            from .engine import build_deblurrer

            self._deblurrers[run] = build_deblurrer(self.model(weights), run)
        return self._deblurrers[run]

    def identity(self) -> tuple[str, int]:
        """(actor id, process id): a new process id for the same actor means it was restarted."""
        return str(ray.get_runtime_context().get_actor_id()), os.getpid()

    def load(self, weights: list[Any]) -> None:
        """Load the weights now (the driver waits for this, to report a replica that cannot)."""
        self.model(weights)

    def settle(self, weights: list[Any]) -> tuple[RunSettings, str]:
        """The run's settings with every choice made here, once, for all replicas (engine.settle):
        what the driver then sends with every job; and why the precision is what it is."""
        from .engine import settle

        settled = settle(self.model(weights), self.run)
        return settled.settings, settled.reason

    def settle_video(
        self, weights: list[Any], run: RunSettings, frames: int | None, height: int, width: int, tile: int | None
    ) -> RunSettings:
        """``run`` settled for a video of ``frames`` frames of height x width: the tile (``tile``
        where an interrupted run recorded one) and compile, as every segment job will run."""
        d = self.deblurrer(weights, run)
        return d.for_run(frames, height, width, run.batch, tile if d.tile is None else None).settled

    def _tagged(self, index: int, value: Any) -> dict[str, Any]:
        actor, pid = self.identity()
        return {"actor": actor, "pid": pid, "value": (index, value)}

    def photo(
        self,
        weights: list[Any],
        run: RunSettings,
        index: int,
        job: Job,
        data: bytes,
        options: PhotoOptions,
        label: str,
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
                    here,
                    self.deblurrer(weights, run),
                    replace(options, overwrite=True, skip_existing=False),
                    label=label,
                )
            files = {real[str(p)]: p.read_bytes() for p in targets(here, options.save_scales, options.compare)}
            said = [_unlocal(str(w.message), real) for w in caught]
            return self._tagged(index, (replace(result, job=job), files, said))
        except MimoError as e:
            return self._tagged(index, type(e)(_unlocal(e.message, real), e.hint))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def pair(
        self, weights: list[Any], run: RunSettings, index: int, pair: Pair, blur: bytes, sharp: bytes
    ) -> dict[str, Any]:
        from .evaluate import evaluate_pair

        folder = Path(tempfile.mkdtemp(dir=self.tmp))
        try:
            here = Pair(pair.name, folder / "blur" / pair.blur.name, folder / "sharp" / pair.sharp.name)
            for p, data in ((here.blur, blur), (here.sharp, sharp)):
                p.parent.mkdir()
                p.write_bytes(data)
            real = {str(here.blur): str(pair.blur), str(here.sharp): str(pair.sharp)}
            try:
                return self._tagged(index, evaluate_pair(here, self.deblurrer(weights, run)))
            except ImageError as e:
                return self._tagged(index, ImageError(_unlocal(e.message, real), e.hint))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def segment(
        self, weights: list[Any], plan: Any, sha256: str, pieces: list[Any], first: int, last: bool
    ) -> dict[str, Any]:
        """video.jobs.segment_job, the function a local run runs, for segment ``first`` of
        ``plan`` (a video.plan.VideoPlan; with ``last``, to the end of the video). ``pieces`` are
        the ObjectRefs of the video's bytes, written to a local file once per video and checked
        against ``sha256``. Returns a video.jobs.SegmentResult."""
        from .video.jobs import segment_job

        shown = str(plan.input)
        src = self.videos.get(sha256)
        if src is None:
            src = self.tmp / sha256[:16] / plan.input.name
            src.parent.mkdir(exist_ok=True)
            part, digest = src.with_name(src.name + ".part"), hashlib.sha256()
            with part.open("wb") as f:
                for ref in pieces:  # one piece in memory at a time
                    piece = ray.get(ref)
                    digest.update(piece)
                    f.write(piece)
            if digest.hexdigest() != sha256:
                part.unlink()
                return self._tagged(first, VideoError(f"{shown}: arrived damaged on a worker", "run the command again"))
            part.replace(src)
            self.videos[sha256] = src
        try:
            return self._tagged(first, segment_job(plan, src, self.deblurrer(weights, plan.run), first, last))
        except MimoError as e:
            return self._tagged(first, type(e)(_unlocal(e.message, {str(src): shown}), e.hint))


def _install_int8(files: dict[str, bytes]) -> None:
    """The driver's int8 model (cluster.int8_files) into this machine's int8 cache, where the
    Deblurrer looks for it; a file already there with other bytes is the driver's now."""
    from .atomic import write_bytes_atomic
    from .quantize import cache_folder

    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items(), key=lambda kv: kv[0].endswith(".json")):  # the record last
        target = folder / Path(name).name
        if not target.exists() or target.read_bytes() != data:
            write_bytes_atomic(target, data)


def _unlocal(text: str, real: dict[str, str]) -> str:
    """A worker's message with its temporary paths replaced by the files they stand for."""
    for here, there in sorted(real.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(here, there)
    return text
