"""The work folder of a run: its manifest, and its checkpoints, each segment the packets of a fresh
encoder (starting on a keyframe) in one file, renamed into place once complete."""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mimocli.atomic import write_bytes_atomic
from mimocli.errors import VideoError

from .encoding import StreamSpec
from .source import Frame

# -- segments: the checkpoints of a run --------------------------------------------------------
_MAGIC = b"MIMOSEG2"
_RECORD = struct.Struct("<Bqqq?IB")  # stream, pts, dts, duration, keyframe, size, side data entries
_SIDE = struct.Struct("<BI")  # name length, size; then the name and the bytes (VP9's alpha, say)
_NONE = -(2**63)


def _write_segment(path: Path, packets: list[tuple[int, Any]], frames: int) -> None:
    buf = io.BytesIO()
    header = json.dumps({"frames": frames}).encode()
    buf.write(_MAGIC + struct.pack("<I", len(header)) + header)
    for stream, p in packets:
        data = bytes(p)
        side = [(sd.data_type.encode(), bytes(sd)) for sd in p.iter_sidedata()]
        buf.write(
            _RECORD.pack(
                stream,
                _NONE if p.pts is None else p.pts,
                _NONE if p.dts is None else p.dts,
                p.duration or 0,
                bool(p.is_keyframe),
                len(data),
                len(side),
            )
        )
        buf.write(data)
        for name, body in side:
            buf.write(_SIDE.pack(len(name), len(body)) + name + body)
    write_bytes_atomic(path, buf.getvalue())


Record = tuple[int, int | None, int | None, int, bool, bytes, list[tuple[str, bytes]]]


def read_segment(path: Path) -> tuple[int, list[Record]]:
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise VideoError(f"{path}: is not a mimo segment", "delete the work folder and run again")
    (n,) = struct.unpack_from("<I", data, len(_MAGIC))
    pos = len(_MAGIC) + 4
    frames = int(json.loads(data[pos : pos + n])["frames"])
    pos += n
    records = []
    while pos < len(data):
        stream, pts, dts, duration, key, size, n_side = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        body = data[pos : pos + size]
        pos += size
        side = []
        for _ in range(n_side):
            name_len, side_size = _SIDE.unpack_from(data, pos)
            pos += _SIDE.size
            name = data[pos : pos + name_len].decode()
            pos += name_len
            side.append((name, data[pos : pos + side_size]))
            pos += side_size
        records.append(
            (stream, None if pts == _NONE else pts, None if dts == _NONE else dts, duration, key, body, side)
        )
    return frames, records


class WorkDir:
    """``.NAME.mimo-partial`` beside the output: the settings of the run and its finished segments."""

    def __init__(self, output: Path):
        self.path = output.parent / f".{output.name}.mimo-partial"
        self.manifest = self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest.exists()

    def segment(self, i: int) -> Path:
        return self.path / f"segment-{i:06d}.bin"

    def done(self) -> int:
        """How many segments, from the first, are complete."""
        i = 0
        while self.segment(i).exists():
            i += 1
        return i

    def frames_done(self) -> int:
        return sum(read_segment(self.segment(i))[0] for i in range(self.done()))

    def settings(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def start(self, settings: dict[str, Any]) -> None:
        self.clear()
        self.path.mkdir(parents=True)
        write_bytes_atomic(self.manifest, json.dumps(settings, indent=1, sort_keys=True).encode())

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


MANIFEST_VERSION = 3  # 2: channels_last and compile joined the settings; 3: aspect ratio and colour tags


class SegmentWriter:
    """Encodes frames into segment files of ``checkpoint`` frames each (runs in the encoder thread)."""

    def __init__(self, work: WorkDir, specs: list[StreamSpec], checkpoint: int, first_segment: int):
        self.work, self.specs, self.checkpoint = work, specs, checkpoint
        self.segments = first_segment  # complete so far
        self.encoders: list[Any] = []
        self.packets: list[tuple[int, Any]] = []
        self.durations: list[dict[int, int]] = []
        self.frames = 0

    def add(self, frame: Frame, images: dict[int, np.ndarray]) -> None:
        """``images``: the outputs by divisor; stream k holds the one divided by 2**k."""
        if not self.encoders:
            self.encoders = [s.encoder() for s in self.specs]
            self.durations = [{} for _ in self.specs]
        for k, (spec, enc) in enumerate(zip(self.specs, self.encoders, strict=True)):
            self.durations[k][frame.pts] = frame.duration
            div = 2**k
            img = images[div]
            alpha = None if frame.alpha is None else frame.alpha[::div, ::div][: spec.height, : spec.width]
            vf = spec.to_frame(np.ascontiguousarray(img[: spec.height, : spec.width]), frame.pts, alpha)
            self._keep(k, enc.encode(vf))
        self.frames += 1
        if self.frames == self.checkpoint:
            self.close()

    def _keep(self, k: int, packets: list[Any]) -> None:
        for p in packets:
            if not p.duration:
                p.duration = self.durations[k].pop(p.pts, 0) if p.pts is not None else 0
            else:
                self.durations[k].pop(p.pts, None)
            self.packets.append((k, p))

    def close(self) -> None:
        """Flush the encoders and write the segment (nothing when no frame came)."""
        if not self.encoders:
            return
        for k, enc in enumerate(self.encoders):
            self._keep(k, enc.encode(None))
            repair_dts([p for s, p in self.packets if s == k])
        _write_segment(self.work.segment(self.segments), self.packets, self.frames)
        self.segments += 1
        self.encoders, self.packets, self.frames = [], [], 0


def repair_dts(packets: list[Any]) -> None:
    """Give a segment's packets (in decode order) sound decode times when the encoder did not:
    libx265 returns garbage ones from its third instance in a process on. Each becomes the
    sorted presentation times, moved back by the least amount that keeps every dts <= its pts."""
    pts = [p.pts for p in packets]
    if not packets or any(t is None for t in pts):
        return
    frame = max(1, max((p.duration or 0) for p in packets))
    if all(p.dts is not None and 0 <= p.pts - p.dts <= 64 * frame for p in packets):
        return
    order = sorted(pts)
    shift = max(0, *(o - t for o, t in zip(order, pts, strict=True)))
    for p, o in zip(packets, order, strict=True):
        p.dts = o - shift
