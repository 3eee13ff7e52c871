"""Past one machine: the photo, pair and video-segment jobs of a local run, on a Ray cluster.

Ray schedules, moves the bytes (its object store), restarts a replica whose worker died and
retries the job it held; mimocli only says what a job is, and runs the same job code as a local
run (photos.deblur_image, evaluate.evaluate_pair, the video pipeline into a SegmentWriter). A
replica is an actor that loads the weights once, from the bytes the driver put in the object
store, checked by sha256. Jobs travel as bytes, so a worker needs no shared file system; the
driver plans, refuses, and writes every result atomically itself, as a local run does.

The replica, what runs on a worker, is mimocli.replica. Imported only for --ray (the `ray`
extra): the core never imports Ray.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.util import ActorPool

from .atomic import remove_stale_parts, write_bytes_atomic, write_failed
from .downloads import sha256_file, unreachable
from .errors import ClusterError, ImageError, MimoError, OutputError
from .evaluate import EvalRecord, Pair
from .paths import Job, targets
from .photos import PhotoOptions, PhotoResult
from .replica import Replica
from .settings import ClusterSettings, ProgressFn, RunSettings
from .weights import LoadedWeights

if TYPE_CHECKING:
    from .video.jobs import SegmentResult
    from .video.plan import VideoPlan

# A worker killed in the middle of a job: Ray starts the replica again and runs the job again.
RESTARTS = 4
PIECE = 64 << 20  # bytes of a video per object in the store


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


def int8_files(model: Any, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, bytes]:
    """The int8 model this machine keeps for these weights (mimo quantize: the file and its
    record), by file name; nothing when there is none. Sent to every replica, so that
    --precision int8 (or auto, where allowed) runs the model calibrated here, on the user's
    photos, instead of one each worker would calibrate on its own."""
    from .checkpoints import state_sha256
    from .quantize import cache_folder, cache_key

    folder = cache_folder(cache_dir)
    if not folder.is_dir() or not any(folder.glob("*.pt")):
        return {}
    path = folder / f"{cache_key(state_sha256(model))}.pt"
    try:
        return {p.name: p.read_bytes() for p in (path, path.with_suffix(".json"))}
    except OSError:
        return {}


def read_failed(path: Path, error: OSError) -> ImageError:
    """One line for an input this machine cannot read to send to a worker, with its fix."""
    if error.errno in (errno.EACCES, errno.EPERM):
        hint = "check the file's permissions"
    elif error.errno == errno.ENOENT:
        hint = "it was there when the run began: check whether something moved it"
    else:
        hint = "check the file and the disk it is on"
    return ImageError(f"{path}: cannot read ({error.strerror or error})", hint)


class Cluster:
    """Replicas of one model on a Ray cluster, and the jobs of a run spread over them.

    The run's choices are made once, by one replica, when the cluster starts (``settled``: the
    precision that "auto" measured there, and why, ``reason``) and sent with every job, so that
    no replica decides again and every one computes what a local run with those settings does.
    For video it is a video.run.SegmentExecutor."""

    def __init__(
        self,
        settings: ClusterSettings,
        loaded: LoadedWeights,
        run: RunSettings,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        from .checkpoints import model_fingerprint

        resources = connect(settings)
        self.settings, self.run, self.loaded = settings, run, loaded
        self.fingerprint = model_fingerprint(loaded.model)
        self.output_scales: tuple[int, ...] = tuple(loaded.model.output_scales)
        self.count = replica_count(settings, resources)
        shipped = ship(loaded)
        int8 = int8_files(loaded.model, cache_dir)
        # Held for as long as a replica may need to start again: [weights, int8 model or None].
        self.weights = [shipped.blob, ray.put(int8) if int8 else None]
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
            settled: tuple[RunSettings, str] = ray.get(self.actors[0].settle.remote(self.weights))
        except ray.exceptions.RayActorError as e:  # __init__ failed: no device, bad weights
            raise ClusterError(
                f"the model replicas could not start ({_cause(e)})",
                "run the same command without --ray to see the error on this machine",
            ) from None
        except ray.exceptions.RayTaskError as e:  # settling failed: a precision the workers lack
            raise ClusterError(
                f"the model replicas cannot run these settings ({_cause(e)})",
                "choose a --device/--precision the workers have (`mimo env` on a worker lists them)",
            ) from None
        self.settled, self.reason = settled

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
                return ray.put(_failed(i, read_failed(job.input, e)))
            return actor.photo.remote(self.weights, self.settled, i, job, data, options, label)

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
                    OutputError(
                        f"{job.output}: cannot make the folder {job.output.parent}: a file is in the way",
                        "move that file, or choose another -o folder",
                    ),
                )
                continue
            except OSError as e:
                yield job, write_failed(job.output, e)
                continue
            for t in targets(job, options.save_scales, options.compare):
                remove_stale_parts(t)
            yield job, result

    # -- pairs --------------------------------------------------------------------------------
    def pairs(self, pairs: list[Pair], on_progress: ProgressFn | None = None) -> Iterator[EvalRecord | ImageError]:
        """evaluate.evaluate on the replicas: each pair's record (or its ImageError), in the pairs' order."""

        def submit(actor: Any, item: tuple[int, Pair]) -> Any:
            i, pair = item
            try:
                blur, sharp = pair.blur.read_bytes(), pair.sharp.read_bytes()
            except OSError as e:
                return ray.put(_failed(i, read_failed(pair.blur, e)))
            return actor.pair.remote(self.weights, self.settled, i, pair, blur, sharp)

        done: dict[int, EvalRecord | ImageError] = {}
        for i, value in self._results(submit, list(enumerate(pairs))):
            done[i] = value
            if on_progress:
                on_progress(len(done), len(pairs))
        for i in range(len(pairs)):  # in the pairs' order, as a local run gives them
            yield done[i]

    # -- video segments (video.run.SegmentExecutor) -------------------------------------------
    def settle(self, frames: int | None, height: int, width: int, tile: int | None) -> RunSettings:
        """The settled settings with the tile and compile of a video of ``frames`` frames of
        height x width, decided once by one replica (``tile``: an interrupted run's)."""
        ask = self.actors[0].settle_video.remote(self.weights, self.settled, frames, height, width, tile)
        result: RunSettings = ray.get(ask)
        return result

    def segments(self, plan: VideoPlan, todo: list[int]) -> Iterator[tuple[int, SegmentResult]]:
        """Run segment jobs ``todo`` of ``plan`` (the last planned one runs to the end of the
        video); yields each job's result as it finishes. The video goes into the object store in
        pieces, so neither this process nor a replica ever holds the whole file in memory."""
        sha256 = sha256_file(plan.input)
        pieces = []
        with plan.input.open("rb") as f:
            while piece := f.read(PIECE):
                pieces.append(ray.put(piece))
        last = (plan.segment_count or 1) - 1

        def submit(actor: Any, k: int) -> Any:
            return actor.segment.remote(self.weights, plan, sha256, pieces, k, k == last)

        for k, value in self._results(submit, todo):
            if isinstance(value, MimoError):
                raise value
            yield k, value

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)


def _failed(index: int, error: MimoError) -> dict[str, Any]:
    """A job that failed on the driver, before reaching a replica, in a replica's reply shape."""
    return {"actor": "", "pid": 0, "value": (index, error)}


def _cause(error: BaseException) -> str:
    text = str(getattr(error, "cause", None) or error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
