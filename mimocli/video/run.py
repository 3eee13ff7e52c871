"""A video run from request to output: refusals, the manifest a resumed run must match, and the
run itself (deblur_video), or what it would do (plan_video)."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import torch

from mimocli.atomic import remove_stale_parts, write_bytes_atomic
from mimocli.checkpoints import state_sha256
from mimocli.downloads import sha256_file
from mimocli.engine import Deblurrer
from mimocli.errors import OutputError, VideoError

from .encoding import FORMATS, GLOBAL_HEADER_FORMAT, SCALE_NAMES, StreamSpec, encoder_threads, encoding_plan
from .formats import even_size
from .frames import FrameFolder, run_frames
from .mux import assemble
from .options import ProgressFn, VideoOptions, VideoRun, VideoSummary
from .pipeline import run_pipeline
from .segments import MANIFEST_VERSION, SegmentWriter, WorkDir, read_segment
from .source import VideoSource, no_frames

if TYPE_CHECKING:
    from mimocli.cluster import Cluster

    from .source import Source


def open_source(path: Path, options: VideoOptions) -> Source:
    if path.is_dir():
        if options.start is not None or options.end is not None:
            raise VideoError(f"{path}: --start/--end need a video file", "cut the frame folder instead")
        return FrameFolder(path, options.fps)
    return VideoSource(path, options.start, options.end, options.repair, options.fps)


def model_fingerprint(model: torch.nn.Module) -> str:
    return state_sha256(model)[:16]


def deblur_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    deblurrer: Deblurrer | None,
    options: VideoOptions = VideoOptions(),  # noqa: B008  (frozen)
    on_progress: ProgressFn | None = None,
    cluster: Cluster | None = None,
) -> VideoSummary:
    """Deblur a video file (or a folder of frames) into ``output`` (a video, or with
    ``options.frames`` a folder of PNG frames). With ``cluster`` (mimocli.cluster, then
    ``deblurrer`` may be None) the segments are deblurred and encoded by its replicas in parallel,
    and muxed here exactly as a local run muxes them.

    Raises VideoError for bad input or settings, OutputError when the output exists (without
    ``overwrite``) or is the input. KeyboardInterrupt and errors leave the input untouched and
    nothing under the output name; the finished segments stay for ``resume``.
    """
    src_path, out_path = Path(input), Path(output)
    check_request(src_path, out_path, options)
    if cluster is not None and options.frames:
        raise VideoError(f"{out_path}: --frames is not run on a cluster", "write a video file, or drop --ray")

    started = time.perf_counter()
    source = open_source(src_path, options)
    summary = VideoSummary(str(src_path), str(out_path), width=source.width, height=source.height)
    try:
        run = VideoRun(source, out_path, deblurrer, options, summary, on_progress, cluster)
        run_frames(run) if options.frames else run_video(run)
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
    summary.missing = source.missing if isinstance(source, VideoSource) else 0
    summary.seconds = time.perf_counter() - started
    summary.fps = summary.deblurred / summary.seconds if summary.seconds else 0.0
    return summary


def check_request(src_path: Path, out_path: Path, options: VideoOptions) -> None:
    """What can be refused before any file is opened. Raises VideoError or OutputError."""
    if options.checkpoint < 1:
        raise VideoError(f"checkpoint must be at least 1 frame, not {options.checkpoint}", "use e.g. 120")
    if options.start is not None and options.end is not None and options.end <= options.start:
        raise VideoError(f"--end {options.end} is not after --start {options.start}", "pick a later --end")
    if out_path.resolve() == src_path.resolve():
        raise OutputError(f"{out_path}: is the input; refusing to write over it", "choose another output name")
    if not options.frames and out_path.suffix.lower() not in FORMATS:
        raise VideoError(
            f"{out_path}: cannot tell the container from the extension",
            f"use one of {', '.join(FORMATS)}, or --frames for a folder of PNG frames",
        )
    if not out_path.parent.is_dir():
        raise OutputError(f"{out_path}: the folder {out_path.parent} does not exist", "create it first")
    if out_path.is_dir() and not options.frames:
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
        if options.frames:
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
            plan["streams_copied"] = sum(1 for s in source.container.streams if s.index != source.stream.index)
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
                "colour": [s.colour.matrix, s.colour.range, s.colour.primaries, s.colour.trc],
            }
            for s in specs
        ],
    }


def _engine(run: VideoRun) -> tuple[dict[str, Any], bool]:
    """How this run's frames go through the network, settled once (on a replica with a cluster),
    and whether the tile was left to "auto"."""
    source, cluster = run.source, run.cluster
    if cluster is None:
        assert run.deblurrer is not None
        auto = run.deblurrer.tile is None
        d = run.settle()
        model, config, tile, settings = d.model, d.config, d.tile or 0, d.settings
    else:
        auto = cluster.run.tile == "auto"
        model, config = cluster.loaded.model, cluster.run
        tile, settings = cluster.settle(source.total, source.height, source.width)
        run.summary.tile = tile
    engine = {"model": model_fingerprint(model), **settings, "tile": tile, "tile_overlap": config.tile_overlap}
    return {**engine, "batch": config.batch}, auto


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


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def run_video(run: VideoRun) -> None:
    """Video out: checkpointed segments, then one mux of them and the input's other streams."""
    source, out_path, options, summary = run.source, run.output, run.options, run.summary
    fmt = FORMATS[out_path.suffix.lower()]
    outputs, codec, pix_fmt, note, (opts, bit_rate) = encoding_plan(source, out_path, options, summary.input)
    if note:
        summary.warnings.append(note)
        warnings.warn(note, UserWarning, stacklevel=2)
    global_header = bool(av.format.ContainerFormat(fmt, "w").flags & GLOBAL_HEADER_FORMAT)
    engine, auto_tile = _engine(run)
    threads = encoder_threads(options, str(engine["device"]))
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
    specs[0].encoder()  # refuse bad settings before any work
    settings = _settings(source, engine, options, specs)
    work = WorkDir(out_path)
    if work.exists():
        old = work.settings()
        if options.resume and old.get("version") != MANIFEST_VERSION:
            raise VideoError(
                f"{out_path}: the interrupted run in {work.path} was made by another version of mimocli",
                "pass --overwrite to start over",
            )
        if options.resume:
            if auto_tile and isinstance(old.get("tile"), int):
                settings["tile"] = summary.tile = old["tile"]  # auto then is auto now, whatever memory is free
                if run.deblurrer is not None:
                    run.deblurrer.tile = old["tile"]
            diff = _diff(old, settings)
            if diff:
                raise VideoError(
                    f"{out_path}: the interrupted run used other settings ({', '.join(diff)})",
                    "resume with the same options and weights, or pass --overwrite to start over",
                )
        elif not options.overwrite:
            raise OutputError(
                f"{out_path}: an interrupted run left its work in {work.path}",
                "pass --resume to continue it, or --overwrite to start over",
            )
        else:
            work.start(settings)
    else:
        work.start(settings)

    summary.codec, summary.pix_fmt = codec, pix_fmt
    if run.cluster is None:
        summary.resumed = work.frames_done()
        writer = SegmentWriter(work, specs, options.checkpoint, work.done())
        index = source.seek_index() if summary.resumed and isinstance(source, VideoSource) else None
        run_pipeline(run, summary.resumed, writer, seek=index.at(summary.resumed) if index else None)
        segments = writer.segments
    else:
        segments = _cluster_segments(run, specs, work, settings["tile"])
    if not summary.resumed + summary.deblurred:
        work.clear()
        raise no_frames(source, options)

    t0 = time.perf_counter()
    summary.streams_copied = assemble(source, work, outputs, specs, segments)
    summary.encode_seconds += time.perf_counter() - t0
    for s, p in zip(SCALE_NAMES, outputs[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(p)
    work.clear()
    for p in outputs:
        remove_stale_parts(p)  # what a run killed while muxing left behind


def _cluster_segments(run: VideoRun, specs: list[StreamSpec], work: WorkDir, tile: int) -> int:
    """The segment jobs not yet in ``work``, run by the cluster's replicas in parallel, each
    result written into ``work`` as it comes. Returns how many segments, from the first, exist."""
    from mimocli.replica import VideoJob

    source, options, summary, cluster = run.source, run.options, run.summary, run.cluster
    assert cluster is not None
    if source.total is None:
        raise VideoError(f"{source.path}: its length is unknown, so it cannot be cut into segments", "drop --ray")
    planned = max(1, -(-source.total // options.checkpoint))
    todo = [k for k in range(planned) if not work.segment(k).exists()]
    summary.resumed = done = sum(read_segment(work.segment(k))[0] for k in range(planned) if k not in todo)
    if run.on_progress:
        run.on_progress(done, source.total)
    video = VideoJob(source.path.name, str(source.path), sha256_file(source.path), options, specs, tile)
    index = source.seek_index() if isinstance(source, VideoSource) else None
    seeks = {k: index.at(k * options.checkpoint) if index else None for k in todo}
    for result in cluster.segments(video, source.path, seeks, planned):
        for k, data in result["files"].items():
            write_bytes_atomic(work.segment(k), data)
        counts, times = result["counts"], result["times"]
        summary.deblurred += counts["deblurred"]
        summary.repaired += counts["repaired"]
        if isinstance(source, VideoSource):
            source.missing += counts["missing"]
        summary.decode_seconds += times["decode"]
        summary.infer_seconds += times["infer"]
        summary.encode_seconds += times["encode"]
        done += counts["deblurred"]
        if run.on_progress:
            run.on_progress(done, max(source.total, done))
    summary.retries = cluster.retries
    return work.done()
