"""Frames out: a folder of PNG files (mimo video --frames), each written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mimocli.engine import Deblurrer
from mimocli.errors import OutputError
from mimocli.images import write_image
from mimocli.paths import SCALE_NAMES

from .encoding import scale_path
from .folder import FrameFolder, Source, no_frames
from .options import ProgressFn, VideoOptions, VideoSummary
from .pipeline import run_pipeline
from .source import Frame


def _frame_name(source: Source, index: int) -> str:
    if isinstance(source, FrameFolder):
        return source.files[index].stem + ".png"
    return f"frame_{index + 1:06d}.png"


class _FrameWriter:
    def __init__(self, source: Source, folders: list[Path]):
        self.source, self.folders = source, folders

    def add(self, frame: Frame, images: dict[int, np.ndarray]) -> None:
        """``images``: the outputs by divisor (1: full size, 2, 4)."""
        name = _frame_name(self.source, frame.index)
        for k, folder in enumerate(self.folders):
            s = 2**k
            img = images[s]
            if frame.alpha is not None:  # RGBA PNG: the transparency as it came
                img = np.dstack([img, frame.alpha[::s, ::s][: img.shape[0], : img.shape[1]]])
            write_image(folder / name, img)

    def close(self) -> None:
        pass


def run_png_frames(
    source: Source,
    out_path: Path,
    deblurrer: Deblurrer,
    options: VideoOptions,
    summary: VideoSummary,
    on_progress: ProgressFn | None = None,
) -> None:
    """One PNG per frame into the folder ``out_path`` (and with ``save_scales`` one per scale),
    each written atomically, so a rerun with resume skips the frames already there."""
    summary.codec = "png"
    folders = [out_path] + ([scale_path(out_path, s, True) for s in SCALE_NAMES] if options.save_scales else [])
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a folder", "choose a folder name for --frames output")
        existing = folder.is_dir() and any(folder.glob("*.png"))
        if existing and not (options.resume or options.overwrite):
            raise OutputError(
                f"{folder}: already holds frames", "pass --resume to continue, or --overwrite to replace them"
            )
        folder.mkdir(parents=True, exist_ok=True)
    deblurrer = deblurrer.for_run(source.total, source.height, source.width, deblurrer.config.batch)
    summary.tile = deblurrer.tile or 0
    summary.settings = deblurrer.report()
    skip = 0
    if options.resume:
        # Each frame is written atomically: continue after the frames present in every folder.
        names = [{p.name for p in folder.glob("*.png")} for folder in folders]
        total = source.total
        while (total is None or skip < total) and all(_frame_name(source, skip) in n for n in names):
            skip += 1
        if deblurrer.config.batch > 1:
            skip -= skip % options.checkpoint  # batch the rest as an uninterrupted run does
    summary.resumed = skip
    writer = _FrameWriter(source, folders)
    run_pipeline(source, deblurrer, options.checkpoint, summary, writer, skip, on_progress=on_progress)
    if not summary.resumed + summary.deblurred:
        raise no_frames(source, options)
    for s, folder in zip(SCALE_NAMES, folders[1:], strict=False):
        summary.scales[SCALE_NAMES[s]] = str(folder)
