"""A video run from request to output: refusals, the plan (decided once), the manifest a resumed
run must match, the segments (here, or by an executor such as a Ray cluster) and the mux; or
what it would do (plan_video)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import av

from mimocli.atomic import remove_stale_parts, write_bytes_atomic
from mimocli.checkpoints import model_fingerprint
from mimocli.engine import Deblurrer
from mimocli.errors import OutputError, VideoError
from mimocli.paths import SCALE_NAMES
from mimocli.settings import RunSettings
from mimocli.tiling import SCALES

from .encoding import (
    CONTAINERS,
    GLOBAL_HEADER_FORMAT,
    INTERLACED,
    StreamSpec,
    encoder_threads,
    encoding_plan,
    interlaced_options,
)
from .folder import FrameFolder, Source, no_frames, open_source
from .formats import even_size
from .jobs import SegmentResult, run_segments
from .mux import assemble
from .options import ProgressFn, VideoOptions, VideoSummary
from .plan import VideoPlan, probe
from .png import run_png_frames
from .segments import MANIFEST_VERSION, WorkDir, read_segment
from .source import VideoSource
from .streams import StreamChoices, plan_streams


class SegmentExecutor(Protocol):
    """Runs a plan's segment jobs somewhere else, in parallel (mimocli.cluster.Cluster on Ray):
    each job is jobs.segment_job, the function a local run runs."""

    fingerprint: str  # the model's (model_fingerprint), for the manifest
    output_scales: tuple[int, ...]  # the network's outputs' sizes as divisors (Deblurrer.scales)

    @property
    def retries(self) -> int:
        """Jobs run again after their worker died."""
        ...

    def settle(self, frames: int | None, height: int, width: int, tile: int | None) -> RunSettings:
        """The settings the jobs will run with, every choice made once (on one replica)."""
        ...

    def segments(self, plan: VideoPlan, todo: list[int]) -> Iterator[tuple[int, SegmentResult]]:
        """Run segment jobs ``todo`` of ``plan``; yield each as it finishes."""
        ...


def deblur_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    deblurrer: Deblurrer | None,
    options: VideoOptions = VideoOptions(),  # noqa: B008  (frozen)
    on_progress: ProgressFn | None = None,
    executor: SegmentExecutor | None = None,
) -> VideoSummary:
    """Deblur a video file (or a folder of frames) into ``output`` (a video, or with
    ``options.png_frames`` a folder of PNG frames). With ``executor`` (a Ray cluster: then
    ``deblurrer`` may be None) the segments are deblurred and encoded by its workers in parallel,
    from the same plan, and muxed here exactly as a local run muxes them.

    Raises VideoError for bad input or settings, OutputError when the output exists (without
    ``overwrite``) or is the input. KeyboardInterrupt and errors leave the input untouched and
    nothing under the output name; the finished segments stay for ``resume``.
    """
    src_path, out_path = Path(input), Path(output)
    check_request(src_path, out_path, options)
    if executor is not None and options.png_frames:
        raise VideoError(f"{out_path}: --frames is not run on a cluster", "write a video file, or drop --ray")
    if executor is None and deblurrer is None:
        raise ValueError("deblur_video needs a Deblurrer, or an executor to run the network")

    started = time.perf_counter()
    source = open_source(src_path, options)
    summary = VideoSummary(str(src_path), str(out_path), width=source.width, height=source.height)
    try:
        if options.png_frames:
            assert deblurrer is not None
            run_png_frames(source, out_path, deblurrer, options, summary, on_progress)
        else:
            run_video(source, out_path, deblurrer, options, summary, on_progress, executor)
    except (OSError, av.error.PyAVCallbackError) as e:  # a read-only folder, a full disk
        if isinstance(e, av.error.PyAVCallbackError):  # a write into our file object failed while muxing
            if not isinstance(e.__context__, OSError):
                raise
            e = e.__context__
        again = ", then run again with --resume to keep the finished part" if WorkDir(out_path).exists() else ""
        raise OutputError(
            f"{out_path}: cannot write ({e.strerror or e})",
            f"check that {out_path.parent.resolve()} is writable and has free space{again}",
        ) from e
    finally:
        source.close()
    summary.frames = summary.resumed + summary.deblurred
    if isinstance(source, VideoSource) and executor is None:
        summary.missing = source.missing
        summary.damaged = source.damaged
    summary.seconds = time.perf_counter() - started
    summary.fps = summary.deblurred / summary.seconds if summary.seconds else 0.0
    return summary


def recorded_choices(output: str | os.PathLike[str], options: VideoOptions) -> dict[str, Any]:
    """What an interrupted run of ``output`` chose for precision, backend and tile, when ``options``
    resume it (else nothing): a resumed run takes these instead of choosing again, which could
    come out otherwise under another load or with another free memory."""
    if not options.resume:
        return {}
    old = WorkDir(Path(output)).settings()
    if old.get("version") != MANIFEST_VERSION:
        return {}
    chosen = (("precision", str), ("backend", str), ("tile", int))
    return {k: old[k] for k, kind in chosen if isinstance(old.get(k), kind)}


def preflight(input: str | os.PathLike[str], output: str | os.PathLike[str], options: VideoOptions) -> None:
    """Everything that can be refused before a model is loaded: the request (check_request), the
    input opened and probed as the run will (missing, unreadable, no video stream, --start past
    the end, cut short without --repair), an audio or subtitle stream the output's container
    cannot hold, and an output folder that cannot be written. Raises VideoError or OutputError."""
    src_path, out_path = Path(input), Path(output)
    check_request(src_path, out_path, options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run opens it again and says them once
        source = open_source(src_path, options)
        try:
            if not options.png_frames:  # a stream the output cannot hold: refused now, not after the frames
                other_streams(source, CONTAINERS[out_path.suffix.lower()], 0)
            if isinstance(source, VideoSource):
                source.check_complete()
        finally:
            source.close()
    folder = out_path if options.png_frames and out_path.is_dir() else out_path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{out_path}: the folder {folder} is not writable", "choose another output folder")


def check_request(src_path: Path, out_path: Path, options: VideoOptions) -> None:
    """What can be refused before any file is opened. Raises VideoError or OutputError."""
    if options.checkpoint < 1:
        raise VideoError(f"checkpoint must be at least 1 frame, not {options.checkpoint}", "use e.g. 120")
    if options.start is not None and options.end is not None and options.end <= options.start:
        raise VideoError(f"--end {options.end} is not after --start {options.start}", "pick a later --end")
    if out_path.resolve() == src_path.resolve():
        raise OutputError(f"{out_path}: is the input; refusing to write over it", "choose another output name")
    if not options.png_frames and out_path.suffix.lower() not in CONTAINERS:
        raise VideoError(
            f"{out_path}: cannot tell the container from the extension",
            f"use one of {', '.join(CONTAINERS)}, or --frames for a folder of PNG frames",
        )
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the folder {out_path.parent} does not exist", "create it first")
    if out_path.is_dir() and not options.png_frames:
        raise OutputError(f"{out_path}: is a folder", "name a video file, or pass --frames to write PNG frames into it")


def plan_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: VideoOptions = VideoOptions(),  # noqa: B008
) -> dict[str, Any]:
    """What ``deblur_video`` would read and write, with the same refusals, but no model, no
    decoding and no file written (--dry-run). Raises VideoError or OutputError as it would."""
    src_path, out_path = Path(input), Path(output)
    check_request(src_path, out_path, options)
    source = open_source(src_path, options)
    try:
        plan: dict[str, Any] = {
            "input": str(src_path),
            "size": f"{source.width}x{source.height}",
            "frames": source.total,
            "fps": float(source.rate),
            "pix_fmt": source.pix_fmt,
            "output": str(out_path),
        }
        if options.png_frames:
            plan["writes"] = "PNG frames"
            return plan
        outputs, codec, pix_fmt, note, _ = encoding_plan(source, out_path, options, str(src_path))
        work = WorkDir(out_path)
        plan.update(
            codec=codec,
            out_pix_fmt=pix_fmt,
            outputs=[str(p) for p in outputs],
            resumes_from=work.frames_done() if options.resume and work.exists() else 0,
            warning=note,
        )
        if isinstance(source, VideoSource):
            streams = other_streams(source, CONTAINERS[out_path.suffix.lower()], 0)
            plan["streams_copied"] = len(streams.copy)
            plan["chapters"] = len(streams.chapters)
            plan["timecode"] = streams.timecode
            plan["left_out"] = list(streams.dropped)
        return plan
    finally:
        source.close()


def _settings(source: Source, engine: dict[str, Any], options: VideoOptions, specs: list[StreamSpec]) -> dict[str, Any]:
    """Everything the output's bytes depend on; a resumed run must match it. ``engine``: the model's
    fingerprint and how it ran (device, precision, tile, batch...)."""
    return {
        "version": MANIFEST_VERSION,
        "input": _fingerprint(source),
        **engine,
        "checkpoint": options.checkpoint,
        "start": options.start,
        "end": options.end,
        "streams": [
            {
                "codec": s.codec,
                "size": f"{s.width}x{s.height}",
                "pix_fmt": s.pix_fmt,
                "options": dict(s.options),
                "threads": s.threads,
                "sar": str(s.sar) if s.sar else None,
                **({"field_order": s.field_order} if s.field_order else {}),
                "colour": [s.colour.matrix, s.colour.range, s.colour.primaries, s.colour.trc],
            }
            for s in specs
        ],
    }


def _fingerprint(source: Source) -> dict[str, Any]:
    if isinstance(source, FrameFolder):
        files = source.files
        st = [f.stat() for f in files]
        digest = hashlib.sha256(
            "\n".join(f"{f.name}:{s.st_size}:{s.st_mtime_ns}" for f, s in zip(files, st, strict=True)).encode()
        )
        return {"path": str(source.path.resolve()), "frames": digest.hexdigest()[:16], "fps": str(source.rate)}
    s = source.path.stat()
    return {"path": str(source.path.resolve()), "size": s.st_size, "mtime_ns": s.st_mtime_ns}


# What a user changes to change a manifest entry: its flag, or what else it stands for.
_FLAGS = {
    "model": "--variant/--weights",
    "input": "the input file",
    "device": "--device",
    "precision": "--precision",
    "backend": "--backend",
    "channels_last": "--channels-last",
    "compile": "--compile",
    "ensemble": "--ensemble",
    "tile": "--tile",
    "tile_overlap": "--tile-overlap",
    "batch": "--batch",
    "checkpoint": "--checkpoint",
    "start": "--start",
    "end": "--end",
    "codec": "--codec",
    "pix_fmt": "--pix-fmt",
    "threads": "--encoder-threads",
    "crf": "--crf",
    "preset": "--preset",
    "size": "--save-scales",
}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ, as the flags that set them, with their values then and now:
    "--crf (18 then, 20 now)"; the encoders' settings compared option by option."""
    said: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "streams" and isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for sa, sb in zip(a, b, strict=True):
                inner = {**sa, **sa.get("options", {})}
                outer = {**sb, **sb.get("options", {})}
                for k in sorted(set(inner) | set(outer)):
                    if k != "options" and inner.get(k) != outer.get(k):
                        said.append(f"{_FLAGS.get(k, k)} ({inner.get(k)} then, {outer.get(k)} now)")
        elif key == "streams":
            said.append("--save-scales")
        elif key in ("model", "input"):
            said.append(_FLAGS[key])
        else:
            said.append(f"{_FLAGS.get(key, key)} ({a} then, {b} now)")
    return list(dict.fromkeys(said))


def run_video(
    source: Source,
    out_path: Path,
    deblurrer: Deblurrer | None,
    options: VideoOptions,
    summary: VideoSummary,
    on_progress: ProgressFn | None = None,
    executor: SegmentExecutor | None = None,
) -> None:
    """Video out: the plan, checkpointed segments (here or by ``executor``), then one mux of
    them and the input's other streams."""
    work = WorkDir(out_path)
    old = work.settings() if work.exists() else {}
    if work.exists() and options.resume and old.get("version") != MANIFEST_VERSION:
        raise VideoError(
            f"{out_path}: the interrupted run in {work.path} was made by another version of mimocli",
            "pass --overwrite to start over",
        )
    resuming = options.resume and work.exists()
    # The tile an interrupted run chose (by free memory, which has changed since) is this run's.
    recorded_tile = recorded_choices(out_path, options).get("tile") if resuming else None
    d: Deblurrer | None = None
    if executor is None:
        assert deblurrer is not None
        tile = recorded_tile if deblurrer.tile is None else None
        d = deblurrer.for_run(source.total, source.height, source.width, deblurrer.config.batch, tile)
        run, fingerprint, summary.settings = d.settled, model_fingerprint(d.model), d.report()
    else:
        run = executor.settle(source.total, source.height, source.width, recorded_tile)
        fingerprint, summary.settings = executor.fingerprint, run.report()
    summary.tile = int(run.tile)
    scales = executor.output_scales if executor is not None else d.scales if d is not None else SCALES
    if options.save_scales and scales != SCALES:
        raise VideoError(
            f"{out_path}: --save-scales writes the 1/2 and 1/4 scale videos, which only MIMO-UNet makes",
            "drop --save-scales (mimo deblur --save-scales writes XYDeblur's residuals of a photo)",
        )
    done = work.done() if resuming else 0
    plan = make_plan(source, out_path, options, run, summary, index=bool(done) or executor is not None)

    settings = _settings(source, {"model": fingerprint, **_recorded(run)}, options, list(plan.specs))
    if resuming:
        diff = _diff(old, settings)
        if diff:
            raise VideoError(
                f"{out_path}: the interrupted run used other settings ({', '.join(diff)})",
                "resume with the same options and weights, or pass --overwrite to start over",
            )
    elif work.exists() and not options.overwrite:
        raise OutputError(
            f"{out_path}: an interrupted run left its work in {work.path}",
            "pass --resume to continue it, or --overwrite to start over",
        )
    else:
        work.start(settings)

    summary.resumed = sum(read_segment(work.segment(k))[0] for k in range(done))
    if executor is None:
        assert d is not None
        segments = run_segments(plan, source, d, work, done, None, summary, on_progress)
    else:
        segments = _executor_segments(plan, executor, work, summary, on_progress)
    if not summary.resumed + summary.deblurred:
        work.clear()
        raise no_frames(source, options)

    t0 = time.perf_counter()
    summary.streams_copied = assemble(plan, source, work, segments)
    summary.encode_seconds += time.perf_counter() - t0
    for s, p in zip(SCALE_NAMES, plan.outputs[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(p)
    work.clear()
    for p in plan.outputs:
        remove_stale_parts(p)  # what a run killed while muxing left behind


def make_plan(
    source: Source, out_path: Path, options: VideoOptions, run: RunSettings, summary: VideoSummary, index: bool
) -> VideoPlan:
    """The run's plan: the output streams (refusing bad encoder settings before any work) and
    the input probed once (with ``index``, its seek index too), with ``run``, the network's
    settled settings. The encoder's choices and warnings go into ``summary``."""
    fmt = CONTAINERS[out_path.suffix.lower()]
    outputs, codec, pix_fmt, note, (opts, bit_rate) = encoding_plan(source, out_path, options, summary.input)
    if note:
        summary.warnings.append(note)
        warnings.warn(note, UserWarning, stacklevel=3)
    summary.codec, summary.pix_fmt = codec, pix_fmt
    global_header = bool(av.format.ContainerFormat(fmt, "w").flags & GLOBAL_HEADER_FORMAT)
    threads = encoder_threads(options, run.report()["device"])
    specs = []
    for div in (1, 2, 4) if options.save_scales else (1,):
        w, h = -(-source.width // div), -(-source.height // div)
        if div > 1 and not even_size(pix_fmt, w, h):
            w, h = w - w % 2, h - h % 2  # the coarse outputs are previews: drop an odd last row/column
        specs.append(
            StreamSpec(
                codec,
                w,
                h,
                pix_fmt,
                source.time_base,
                source.rate,
                source.colour.tagged(w, h, pix_fmt),
                tuple(sorted(opts.items())),
                bit_rate,
                global_header,
                threads,
                source.sar,
            )
        )
    field_order = getattr(source, "field_order", 0)
    if field_order in INTERLACED:
        note = (
            f"{source.path}: interlaced ({INTERLACED[field_order]}): each frame is deblurred whole, its two fields "
            "together as one picture, and written interlaced in the same field order (deinterlace it first, "
            "e.g. ffmpeg -vf bwdif, for the sharpest result)"
        )
        summary.warnings.append(note)
        warnings.warn(note, UserWarning, stacklevel=3)
        main = specs[0]
        opts = interlaced_options(main.codec, field_order, dict(main.options))
        specs[0] = dataclasses.replace(main, options=tuple(sorted(opts.items())), field_order=field_order)
    specs[0].encoder()  # refuse bad settings before any work
    found = probe(source, options, index)
    streams = other_streams(source, fmt, found.shift)
    for note in streams.dropped:
        summary.warnings.append(f"{source.path}: {note}; left out")
        warnings.warn(f"{source.path}: {note}; left out", UserWarning, stacklevel=3)
    return VideoPlan(
        source.path,
        options,
        source.width,
        source.height,
        source.total,
        source.time_base,
        found.shift,
        found.display_matrix,
        found.seeks,
        tuple(outputs),
        tuple(specs),
        run,
        streams,
    )


def other_streams(source: Source, fmt: str, shift: int) -> StreamChoices:
    """What the output keeps of the input's other streams, chapters and timecode, for the range
    whose first frame is at ``shift`` (in the source's time base); refusals before any work."""
    if not isinstance(source, VideoSource):
        return StreamChoices()
    cut = float(shift * source.time_base) if source.start is not None else None
    first = source.stream.start_time or 0
    skipped = round((shift - first) * source.time_base * source.rate) if source.start is not None else 0
    return plan_streams(source, fmt, cut, source.end, max(0, skipped))


def _recorded(run: RunSettings) -> dict[str, Any]:
    """How the frames go through the network, as the manifest records it."""
    return {**run.report(), "tile": int(run.tile), "tile_overlap": run.tile_overlap}


def _executor_segments(
    plan: VideoPlan, executor: SegmentExecutor, work: WorkDir, summary: VideoSummary, on_progress: ProgressFn | None
) -> int:
    """The segment jobs not yet in ``work``, run by ``executor`` in parallel, each result written
    into ``work`` as it comes. Returns how many segments, from the first, exist."""
    planned = plan.segment_count
    if planned is None:
        raise VideoError(f"{plan.input}: its length is unknown, so it cannot be cut into segments", "drop --ray")
    todo = [k for k in range(planned) if not work.segment(k).exists()]
    summary.resumed = done = sum(read_segment(work.segment(k))[0] for k in range(planned) if k not in todo)
    total = plan.total or 0
    if on_progress:
        on_progress(done, total)
    for _k, result in executor.segments(plan, todo):
        for i, data in result.files.items():
            write_bytes_atomic(work.segment(i), data)
        summary.deblurred += result.deblurred
        summary.repaired += result.repaired
        summary.missing += result.missing
        summary.damaged += result.damaged
        summary.decode_seconds += result.times.get("decode", 0.0)
        summary.infer_seconds += result.times.get("infer", 0.0)
        summary.encode_seconds += result.times.get("encode", 0.0)
        done += result.deblurred
        if on_progress:
            on_progress(done, max(total, done))
    summary.retries = executor.retries
    return work.done()
