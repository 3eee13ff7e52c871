"""The encoder choices: codec, pixel format, encoder options and the streams a run writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from mimocli.errors import OutputError, VideoError
from mimocli.paths import SCALE_NAMES

from .formats import SWS_FLAGS, YUVA8, Colour, alpha_view, bits, chroma, even_size, has_alpha
from .options import VideoOptions

if TYPE_CHECKING:
    from .folder import Source

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}


CODEC_ALIASES = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "vp9": "libvpx-vp9",
    "av1": "libsvtav1",
    "prores": "prores_ks",
}


# Near-transparent quality by default: deblurring adds fine detail that a higher CRF smears away.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libsvtav1": 26}


GLOBAL_HEADER_FORMAT = 0x0040  # AVFMT_GLOBALHEADER


_GLOBAL_HEADER_CODEC = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER


# -- encoding ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """One encoded video stream: what every segment's encoder and the final muxer agree on."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    rate: Fraction
    colour: Colour
    options: tuple[tuple[str, str], ...]
    bit_rate: int | None
    global_header: bool
    threads: int = 1
    sar: Fraction | None = None  # sample (pixel) aspect ratio; None: square pixels
    field_order: int = 0  # AVFieldOrder of an interlaced input, kept (0: none said, progressive)

    def encoder(self) -> Any:
        """A fresh, open encoder. Raises VideoError when FFmpeg refuses the settings."""
        if self.codec == "libsvtav1":
            # SVT-AV1 prints 25 lines per encoder (one per segment) unless told otherwise; a
            # level the user set stays theirs.
            os.environ.setdefault("SVT_LOG", "1")
        ctx = av.CodecContext.create(self.codec, "w")
        self.configure(ctx)
        # One encoder thread by default on CPU, where inference is 98% of the time and the
        # encoder should not compete with it; on a GPU the encoder would set the pace, so there
        # it gets FFmpeg's choice. (Neither makes x264 bit-reproducible: for identical YUV input
        # a fresh single-threaded x264 encoder gave a different first packet in 4 of 16 runs
        # under load. FFV1 is.)
        ctx.thread_count = self.threads
        if self.global_header:
            ctx.flags |= _GLOBAL_HEADER_CODEC
        try:
            ctx.open()
        except av.error.FFmpegError as e:
            raise VideoError(
                f"the {self.codec} encoder refused {self.width}x{self.height} {self.pix_fmt} "
                f"with {dict(self.options)} ({e.strerror or e})",
                "check --codec, --pix-fmt, --crf and --preset",
            ) from None
        return ctx

    def configure(self, ctx: Any) -> None:
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, self.pix_fmt
        ctx.time_base = self.time_base
        ctx.framerate = self.rate
        ctx.colorspace = self.colour.matrix
        ctx.color_range = self.colour.range
        ctx.color_primaries = self.colour.primaries
        ctx.color_trc = self.colour.trc
        if self.sar is not None:
            ctx.sample_aspect_ratio = self.sar
        if self.field_order:
            ctx.field_order = self.field_order
        if self.bit_rate is not None:
            ctx.bit_rate = self.bit_rate
        ctx.options = dict(self.options)

    def to_frame(self, rgb: np.ndarray, pts: int, alpha: np.ndarray | None = None) -> Any:
        deep = rgb.dtype == np.uint16
        if alpha is not None and has_alpha(self.pix_fmt):
            rgb = np.dstack([rgb, alpha[: rgb.shape[0], : rgb.shape[1]]])
            frame = av.VideoFrame.from_ndarray(rgb, format="rgba64le" if deep else "rgba")
        else:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if deep else "rgb24")
        out = frame.reformat(
            format=self.pix_fmt,
            dst_colorspace=self.colour.sws_matrix(self.width, self.height),
            dst_color_range=self.colour.sws_range(self.pix_fmt),
            interpolation=SWS_FLAGS,
        )
        if alpha is not None and self.pix_fmt in YUVA8 and alpha.dtype == np.uint8:
            alpha_view(out)[...] = alpha[: out.height, : out.width]  # exactly as it came
        out.pts = pts
        out.time_base = self.time_base
        out.colorspace = self.colour.matrix
        out.color_range = self.colour.range
        return out


def resolve_codec(name: str | None, output: Path) -> str:
    """--codec or the output extension's default -> an FFmpeg encoder name. Raises VideoError."""
    codec = (name or DEFAULT_CODECS.get(output.suffix.lower(), "libx264")).strip().lower()
    codec = CODEC_ALIASES.get(codec, codec)
    try:
        c = av.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        raise VideoError(
            f"unknown video encoder {name!r}", "use h264, hevc, vp9, av1, ffv1, prores or another FFmpeg encoder"
        ) from None
    if c.type != "video":
        raise VideoError(f"{codec!r} is not a video encoder", "use h264, hevc, vp9, av1, ffv1 or prores")
    return c.name


def choose_pix_fmt(
    codec: str, source: str, requested: str | None, deep: bool, name: str = "the input"
) -> tuple[str, str | None]:
    """The pixel format to encode: the requested one, else the input's where the encoder takes it,
    else its nearest (same depth and chroma first). Returns (pix_fmt, warning or None)."""
    supported = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    alpha = has_alpha(source)
    if requested:
        try:
            av.VideoFormat(requested)
        except (ValueError, TypeError):
            raise VideoError(f"unknown pixel format {requested!r}", "use e.g. yuv420p, yuv444p, yuv420p10le") from None
        if supported and requested not in supported:
            raise VideoError(f"{codec} cannot encode {requested}", f"use one of {', '.join(supported)}")
        dropped = alpha and not has_alpha(requested)
        return requested, ("the alpha channel (transparency) is dropped, as --pix-fmt asks" if dropped else None)
    if not supported or source in supported:
        return source, None
    if alpha and codec in ("libvpx", "libvpx-vp9"):
        return "yuva420p", None  # libvpx encodes alpha as a second 4:2:0 stream only
    if alpha and not any(has_alpha(f) for f in supported):
        raise VideoError(
            f"{name} is transparent (an alpha channel), which {codec} cannot hold",
            "write .webm (VP9), or -c ffv1 into .mkv, or -c prores_ks into .mov, or --frames (PNG); "
            "--pix-fmt yuv420p drops the transparency",
        )
    want_bits = 10 if deep else 8
    want_chroma = chroma(source)
    ranked = sorted(
        supported,
        key=lambda f: (
            min(bits(f), want_bits) != want_bits,
            chroma(f) != want_chroma,
            av.VideoFormat(f).is_rgb,
            abs(bits(f) - want_bits),
            has_alpha(f) != alpha,  # alpha where the input has it, none where it has none
        ),
    )
    best = ranked[0]
    note = None
    if bits(best) < bits(source):
        note = f"{codec} cannot encode {source}; writing {best} (fewer bits per sample)"
    return best, note


def encoder_options(codec: str, crf: int | None, preset: str | None) -> tuple[dict[str, str], int | None]:
    """FFmpeg options (and bit rate) for --crf/--preset on this encoder."""
    opts: dict[str, str] = {}
    bit_rate = None
    quality = crf if crf is not None else DEFAULT_CRF.get(codec)
    if quality is not None:
        if codec not in DEFAULT_CRF:
            raise VideoError(f"--crf does not apply to {codec}", f"use it with {', '.join(DEFAULT_CRF)}")
        opts["crf"] = str(quality)
        if codec == "libvpx-vp9":
            bit_rate = 0  # constant quality, no bit-rate cap
            opts["row-mt"] = "1"
    if codec == "libx265":
        opts["x265-params"] = "log-level=error"  # not a banner per segment on stderr
    if preset:
        if codec in ("libx264", "libx265", "libsvtav1"):
            opts["preset"] = preset
        elif codec == "libvpx-vp9":
            if not preset.isdigit():
                raise VideoError(f"--preset for vp9 is a speed 0..8, not {preset!r}", "e.g. --preset 4")
            opts["cpu-used"] = preset
        else:
            raise VideoError(f"--preset does not apply to {codec}", "use it with h264, hevc, vp9 or av1")
    return opts, bit_rate


INTERLACED = {2: "top field first", 3: "bottom field first", 4: "top field first", 5: "bottom field first"}
_FIELDS = {2: "tff", 3: "bff", 4: "tff", 5: "bff"}  # AVFieldOrder -> x264/x265's option


def interlaced_options(codec: str, field_order: int, opts: dict[str, str]) -> dict[str, str]:
    """``opts`` with what makes x264/x265 encode interlaced in ``field_order`` (others take the
    field order as the stream's tag alone)."""
    flag = _FIELDS.get(field_order)
    if flag is None or codec not in ("libx264", "libx265"):
        return opts
    key = "x264-params" if codec == "libx264" else "x265-params"
    extra = f"{flag}=1" if codec == "libx264" else f"interlace={flag}"
    return {**opts, key: f"{opts[key]}:{extra}" if opts.get(key) else extra}


def encoder_threads(options: VideoOptions, device: str) -> int:
    """--encoder-threads, or 1 when the network runs on the CPU (bit-exact --resume; the cores are
    busy anyway) and FFmpeg's choice (0) on a GPU."""
    if options.encoder_threads is not None:
        return options.encoder_threads
    return 1 if device == "cpu" else 0


def scale_path(output: Path, scale: float, frames: bool) -> Path:
    name = SCALE_NAMES[scale]
    if frames:
        return output.parent / f"{output.name}_{name}"
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def encoding_plan(
    source: Source, out_path: Path, options: VideoOptions, name: str
) -> tuple[list[Path], str, str, str | None, tuple[dict[str, str], int | None]]:
    """The output files, codec, pixel format (with a warning or None) and encoder options of a
    video run, refusing what the run would refuse: existing outputs, a pixel format the encoder
    lacks or the frame size does not fit. Shared by the run and its --dry-run."""
    outputs = [out_path] + ([scale_path(out_path, s, False) for s in SCALE_NAMES] if options.save_scales else [])
    for p in outputs:
        if p.exists() and not options.overwrite:
            raise OutputError(f"{p}: already exists", "pass --overwrite to replace it")
    codec = resolve_codec(options.codec, out_path)
    pix_fmt, note = choose_pix_fmt(codec, source.pix_fmt, options.pix_fmt, source.deep, name)
    if not even_size(pix_fmt, source.width, source.height):
        raise VideoError(
            f"{name}: {source.width}x{source.height} cannot be encoded as {pix_fmt}, whose colour planes "
            "need an even width and height",
            "pass --pix-fmt yuv444p to keep every pixel",
        )
    return outputs, codec, pix_fmt, note, encoder_options(codec, options.crf, options.preset)
