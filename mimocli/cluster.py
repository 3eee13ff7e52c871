"""Past one machine: the photo, pair and video-segment jobs of a local run, on a Ray cluster.

Ray schedules, moves the bytes (its object store), restarts a replica whose worker died and
retries the job it held; mimocli only says what a job is, and runs the same job code as a local
run (photos.deblur_image, evaluate.evaluate_pair, the video pipeline into a SegmentWriter). A
replica is an actor that loads the weights once, from the bytes the driver put in the object
store, checked by sha256. Jobs travel as bytes, so a worker needs no shared file system; the
driver plans, refuses, and writes every result atomically itself, as a local run does.

Imported only for --ray (the `ray` extra): the core never imports Ray.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.util import ActorPool

from .atomic import remove_stale_parts, write_bytes_atomic
from .downloads import unreachable
from .errors import ClusterError, ImageError, IntegrityError, MimoError, OutputError
from .evaluate import EvalRecord, Pair
from .paths import Job, targets
from .photos import PhotoOptions, PhotoResult
from .settings import ClusterSettings, RunSettings
from .weights import LoadedWeights

# A worker killed in the middle of a job: Ray starts the replica again and runs the job again.
RESTARTS = 4


def connect(settings: ClusterSettings) -> dict[str, float]:
    """Join (or, for "local", start) the cluster; returns its resources. Raises ClusterError."""
    if not ray.is_initialized():
        logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notices are not ours to print
        # Ray would replace this process's print with its own, for progress bars of its workers.
        os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": False}
        try:
            if settings.address == "local":
                ray.init(address="local", include_dashboard=False, **quiet)
            else:
                if settings.address != "auto" and (why := unreachable(_as_url(settings.address))):
                    raise ConnectionError(why)  # at once, not after Ray's minutes of retries
                ray.init(address=settings.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(
                f"cannot join the Ray cluster at {settings.address} ({first})",
                "start one with `ray start --head` and pass --ray auto, or use --ray local",
            ) from None
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _as_url(address: str) -> str:
    """A Ray address (ray://host:port, host:port) as a URL whose host and port can be probed."""
    return address if "://" in address else f"tcp://{address}"


def replica_count(settings: ClusterSettings, resources: dict[str, float]) -> int:
    """``settings.replicas``, or as many replicas as the cluster's CPUs (GPUs) hold."""
    if settings.replicas:
        return settings.replicas
    if settings.gpus:
        n = int(resources.get("GPU", 0) // settings.gpus)
        if n < 1:
            raise ClusterError(
                f"the cluster has {resources.get('GPU', 0):g} GPU(s), fewer than one replica's {settings.gpus:g}",
                "add GPU nodes, or lower --ray-gpus",
            )
        return n
    return max(1, int(resources.get("CPU", 1) // settings.cpus))


@dataclass(frozen=True)
class Shipped:
    """The weights as they travel: safetensors bytes in the object store and their sha256."""

    blob: Any  # an ObjectRef to the bytes
    sha256: str
    ensemble: bool


def ship(loaded: LoadedWeights) -> Shipped:
    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in loaded.model.state_dict().items()})
    return Shipped(ray.put(blob), hashlib.sha256(blob).hexdigest(), bool(loaded.model.ensemble))


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

    def segment(self, weights: list[Any], video: VideoJob, data: bytes, first: int, last: bool) -> dict[str, Any]:
        """The segment job: frames from segment ``first`` on (to the end if ``last``, else one
        segment) deblurred and encoded, as the segment files' bytes by index."""
        from .video.options import VideoRun, VideoSummary
        from .video.pipeline import run_pipeline
        from .video.run import open_source
        from .video.segments import SegmentWriter, WorkDir

        src = self.videos.get(video.sha256)
        if src is None:
            src = self.tmp / video.sha256[:16] / video.name
            src.parent.mkdir(exist_ok=True)
            src.write_bytes(data)
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
            run_pipeline(run, first * checkpoint, writer, until=None if last else (first + 1) * checkpoint)
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


class Cluster:
    """Replicas of one model on a Ray cluster, and the jobs of a run spread over them."""

    def __init__(self, settings: ClusterSettings, loaded: LoadedWeights, run: RunSettings) -> None:
        resources = connect(settings)
        self.settings, self.run, self.loaded = settings, run, loaded
        self.count = replica_count(settings, resources)
        shipped = ship(loaded)
        self.weights = [shipped.blob]  # held for as long as a replica may need to start again
        actor = ray.remote(Replica).options(
            num_cpus=settings.cpus,
            num_gpus=settings.gpus,
            max_restarts=RESTARTS,
            max_task_retries=RESTARTS,
            max_concurrency=1,
        )
        cpus = settings.cpus
        self.actors: list[Any] = [actor.remote(shipped.sha256, shipped.ensemble, run, cpus) for _ in range(self.count)]
        self.pids: dict[str, set[int]] = {}
        try:
            ray.get([a.load.remote(self.weights) for a in self.actors])  # loaded, or why not
            for actor_id, pid in ray.get([a.identity.remote() for a in self.actors]):
                self.pids[actor_id] = {pid}
        except ray.exceptions.RayActorError as e:  # __init__ failed: no device, bad weights
            raise ClusterError(f"the model replicas could not start ({_cause(e)})") from None

    @property
    def retries(self) -> int:
        """Jobs that Ray ran again after their worker died (one per replica restart seen)."""
        return sum(len(p) - 1 for p in self.pids.values())

    def _results(self, submit: Callable[[Any, Any], Any], items: list[Any]) -> Iterator[Any]:
        pool = ActorPool(self.actors)
        try:
            for tagged in pool.map_unordered(submit, items):
                if tagged["actor"]:
                    self.pids.setdefault(tagged["actor"], set()).add(tagged["pid"])
                yield tagged["value"]
        except ray.exceptions.RayError as e:
            raise ClusterError(
                f"the cluster lost the work ({_cause(e)})",
                "what finished is kept: run the same command again to do the rest",
            ) from None

    # -- photos -------------------------------------------------------------------------------
    def photos(
        self, jobs: list[Job], options: PhotoOptions, label: str
    ) -> Iterator[tuple[Job, PhotoResult | MimoError]]:
        """Each job's result, in the order they finish, its outputs written here (atomically);
        a job that failed comes with its error."""

        def submit(actor: Any, item: tuple[int, Job]) -> Any:
            i, job = item
            try:
                data = job.input.read_bytes()
            except OSError as e:
                return ray.put(_failed(i, ImageError(f"{job.input}: cannot read ({e.strerror or e})")))
            return actor.photo.remote(self.weights, i, job, data, options, label)

        for i, value in self._results(submit, list(enumerate(jobs))):
            job = jobs[i]
            if isinstance(value, MimoError):
                yield job, value
                continue
            result, files, said = value
            for text in said:
                warnings.warn(text, UserWarning, stacklevel=2)
            try:
                for path, data in files.items():
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(Path(path), data)
            except (FileExistsError, NotADirectoryError):
                yield (
                    job,
                    OutputError(f"{job.output}: cannot make the folder {job.output.parent}: a file is in the way"),
                )
                continue
            except OSError as e:
                yield job, OutputError(f"{job.output}: cannot write ({e.strerror or e})")
                continue
            for t in targets(job, options.save_scales, options.compare):
                remove_stale_parts(t)
            yield job, result

    # -- pairs --------------------------------------------------------------------------------
    def pairs(
        self, pairs: list[Pair], on_progress: Callable[[int, int], None] | None = None
    ) -> Iterator[EvalRecord | ImageError]:
        """evaluate.evaluate on the replicas: each pair's record (or its ImageError), in the pairs' order."""

        def submit(actor: Any, item: tuple[int, Pair]) -> Any:
            i, pair = item
            try:
                blur, sharp = pair.blur.read_bytes(), pair.sharp.read_bytes()
            except OSError as e:
                return ray.put(_failed(i, ImageError(f"{pair.blur}: cannot read ({e.strerror or e})")))
            return actor.pair.remote(self.weights, i, pair, blur, sharp)

        done: dict[int, EvalRecord | ImageError] = {}
        for i, value in self._results(submit, list(enumerate(pairs))):
            done[i] = value
            if on_progress:
                on_progress(len(done), len(pairs))
        for i in range(len(pairs)):  # in the pairs' order, as a local run gives them
            yield done[i]

    # -- video segments -----------------------------------------------------------------------
    def settle(self, frames: int | None, height: int, width: int) -> tuple[int, dict[str, object]]:
        tile, settings = ray.get(self.actors[0].settle.remote(self.weights, frames, height, width))
        return int(tile), dict(settings)

    def segments(self, video: VideoJob, path: Path, todo: list[int], planned: int) -> Iterator[dict[str, Any]]:
        """Run the segment jobs ``todo`` (the last planned one runs to the end of the video);
        yields each job's segment files (bytes by index), counts and times as it finishes."""
        data = ray.put(path.read_bytes())

        def submit(actor: Any, k: int) -> Any:
            return actor.segment.remote(self.weights, video, data, k, k == planned - 1)

        for _k, value in self._results(submit, todo):
            if isinstance(value, MimoError):
                raise value
            files, counts, times = value
            yield {"files": files, "counts": counts, "times": times}

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)


def _failed(index: int, error: MimoError) -> dict[str, Any]:
    """A job that failed on the driver, before reaching a replica, in a replica's reply shape."""
    return {"actor": "", "pid": 0, "value": (index, error)}


def _cause(error: BaseException) -> str:
    text = str(getattr(error, "cause", None) or error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
