"""Real video files for the tests, made with PyAV: audio, subtitles, variable frame rate,
rotation, colour tags, 10-bit, odd sizes, corrupt packets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from safetensors.torch import save_file

from mimocli.arch import MIMOUNet

SRT = """1
00:00:00,100 --> 00:00:00,400
Hello

2
00:00:00,500 --> 00:00:00,900
World
"""


def picture(i: int, h: int, w: int) -> np.ndarray:
    """Frame i of a moving, photo-like test pattern (uint8 RGB)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = xx + 2 * i
    r = 0.5 + 0.4 * np.sin(x / 7 + yy / 11)
    g = 0.5 + 0.4 * np.cos(x / 5 - yy / 9)
    b = 0.5 + 0.3 * np.sin((x + yy) / 13)
    img = np.stack([r, g, b], axis=-1)
    img[h // 4 : h // 2, (w // 4 + i) % w : (w // 4 + i) % w + w // 6] = (0.9, 0.2, 0.1)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def smooth_picture(i: int, h: int, w: int) -> np.ndarray:
    """Frame i of slow, in-gamut colour gradients: nothing that chroma subsampling can clip."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.25 * np.sin((xx + i) / w * 3)
    g = 0.45 + 0.2 * np.cos(yy / h * 3)
    b = 0.4 + 0.2 * np.sin((xx + yy) / (w + h) * 4)
    return np.rint(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def make_clip(
    path: Path,
    frames: int = 24,
    size: tuple[int, int] = (64, 48),
    fps: int = 24,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = "aac",
    subtitles: bool = False,
    vfr: bool = False,
    rotate: int | None = None,
    colour: tuple[int, int, int, int] | None = (1, 1, 1, 1),  # matrix, range, primaries, trc
    title: str | None = None,
    smooth: bool = False,
    sar: Fraction | None = None,
    fmt: str | None = None,
    gop: int | None = None,
    chapters: list[tuple[float, float, str]] | None = None,
    timecode: str | None = None,
    attachment: bool = False,
    brand: str | None = None,
) -> Path:
    """A clip of ``frames`` frames; with ``vfr`` every third frame lasts twice as long; ``sar``:
    the sample aspect ratio; ``fmt``: the container (e.g. "h264", a raw elementary stream);
    ``gop``: a keyframe every ``gop`` frames (x264: B-frames between them). ``chapters``: (start,
    end, title) in seconds, as `ffmpeg -map_chapters` writes them (in MP4/MOV a text chapter
    track, which FFmpeg reads back as a data stream and as the chapters); ``timecode``: as
    `ffmpeg -timecode` writes it (in MOV/MP4 a tmcd data stream); ``attachment``: a font
    attached, as Matroska files with styled subtitles carry one. ``brand``: an MP4/MOV's major
    brand (the muxer's ``brand`` option), as a camera or phone writes its own."""
    w, h = size
    tb = Fraction(1, fps * 512)
    with av.open(str(path), "w", format=fmt, options={"brand": brand} if brand else {}) as out:
        if title:
            out.metadata["title"] = title
        v = out.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, pix_fmt
        v.time_base = tb
        v.codec_context.time_base = tb
        v.metadata["language"] = "eng"
        if codec == "libx264":
            v.options = {"crf": "12"} | ({"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"} if gop else {})
        elif gop:
            v.codec_context.gop_size = gop
        if sar is not None:
            v.codec_context.sample_aspect_ratio = sar
        if colour:
            ctx = v.codec_context
            ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = colour
        if rotate is not None:
            v.set_display_rotation(rotate)
        if timecode is not None:
            v.metadata["timecode"] = timecode
        if chapters:
            out.set_chapters(
                [
                    {"id": i + 1, "start": round(a * 1000), "end": round(b * 1000), "time_base": Fraction(1, 1000)}
                    | {"metadata": {"title": title}}
                    for i, (a, b, title) in enumerate(chapters)
                ]
            )
        if attachment:
            out.add_attachment("font.ttf", "font/ttf", b"\0\1\0\0 not really a font")
        a = None
        if audio:
            a = out.add_stream(audio, rate=48000, layout="stereo")
            a.metadata["language"] = "fra"
        s = srt = None
        if subtitles:
            (path.parent / "subs.srt").write_text(SRT)
            srt = av.open(str(path.parent / "subs.srt"))
            s = out.add_stream_from_template(srt.streams[0])
            s.metadata["language"] = "deu"
        deep = "10" in pix_fmt
        pts = 0
        for i in range(frames):
            rgb = smooth_picture(i, h, w) if smooth else picture(i, h, w)
            if deep:
                frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint16) * 257, format="rgb48le")
            else:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if colour:
                frame = frame.reformat(
                    format=pix_fmt, dst_colorspace={1: 1, 9: 9}.get(colour[0], 5), dst_color_range=colour[1]
                )
            dur = 1024 if vfr and i % 3 == 2 else 512
            frame.pts, frame.time_base = pts, tb
            frame.duration = dur
            pts += dur
            out.mux(v.encode(frame))
        out.mux(v.encode())
        if a is not None:
            seconds = float(pts * tb)
            n = int(seconds * 48000)
            t = np.arange(n) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for k in range(0, n, 1024):
                chunk = tone[k : k + 1024]
                af = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, k
                out.mux(a.encode(af))
            out.mux(a.encode())
        if s is not None and srt is not None:
            for p in srt.demux(srt.streams[0]):
                if p.dts is None:
                    continue
                p.stream = s
                out.mux(p)
            srt.close()
    return path


def corrupt_packet(src: Path, dst: Path, index: int) -> Path:
    """Copy ``src`` with the video packet number ``index`` replaced by garbage."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s, opaque=True) for s in c.streams}
        n = 0
        for p in c.demux():
            if p.dts is None and p.size == 0:
                continue
            if p.stream.type == "video":
                if n == index:
                    data = bytes((b * 7 + 13) & 255 for b in bytes(p))
                    q = av.Packet(data[:4] + data[4:])
                    q.pts, q.dts, q.duration, q.time_base = p.pts, p.dts, p.duration, p.time_base
                    q.stream = streams[p.stream.index]
                    out.mux(q)
                    n += 1
                    continue
                n += 1
            p.stream = streams[p.stream_index]
            out.mux(p)
    return dst


def decode(path: Path) -> tuple[list[int], list[np.ndarray], object]:
    """(pts, RGB frames, first frame) of a video's first video stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        deep = "10" in frames[0].format.name
        rgbs = [f.to_ndarray(format="rgb48le" if deep else "rgb24") for f in frames]
        return [f.pts for f in frames], rgbs, frames[0]


def planes(path: Path) -> list[list[np.ndarray]]:
    """The Y, U and V planes of every frame, as stored."""
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            dtype = np.uint16 if f.format.components[0].bits > 8 else np.uint8
            out.append(
                [
                    np.frombuffer(p, dtype).reshape(p.height, -1)[:, : p.width // np.dtype(dtype).itemsize].copy()
                    for p in f.planes
                ]
            )
        return out


def packets(path: Path, kind: str) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [(p.pts, bytes(p)) for p in c.demux(*streams) if p.size]


def identity_weights(path: Path, width: int = 8) -> Path:
    """A MIMO-UNet whose output layers are zero: it returns its input exactly, so a test can
    see what the pipeline alone does to pixels."""
    torch.manual_seed(0)
    model = MIMOUNet(1, width)
    with torch.no_grad():
        for m in (model.ConvsOut[0], model.ConvsOut[1], model.feat_extract[5]):
            for p in m.parameters():
                p.zero_()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def small_weights(path: Path, width: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in MIMOUNet(1, width).state_dict().items()}, path)
    return path
