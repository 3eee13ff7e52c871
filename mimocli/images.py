"""Image files <-> numpy arrays, keeping bit depth, grayscale, alpha, EXIF and ICC profiles.

Pixels come out as (H,W) grayscale or (H,W,C) with C in 2 (gray+alpha), 3 (RGB), 4 (RGBA),
uint8 or uint16, upright (the EXIF orientation applied). Pillow reads and writes 8-bit files and
all metadata; OpenCV handles 16-bit colour, which Pillow would reduce to 8 bits.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .atomic import write_bytes_atomic
from .deep_images import STORAGE_TAGS, encode_cv2_16, encode_png_gray_alpha16, encode_tiff16, png_add_chunks, png_chunk
from .errors import ImageError, OutputError
from .settings import DEFAULT_MAX_PIXELS, FORMATS, READABLE

EXIF_ORIENTATION = 0x0112

SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
LOSSY_FORMATS = ("JPEG", "WEBP", "AVIF")


@dataclass
class ImageFile:
    """Pixels plus what we carry from input to output."""

    pixels: np.ndarray
    format: str
    exif: bytes | None = None  # raw EXIF, orientation reset to 1 since pixels are upright
    icc: bytes | None = None
    dpi: tuple[float, float] | None = None
    xmp: bytes | None = None  # Adobe XMP packet (ratings, keywords, edits)
    srgb: int | None = None  # a PNG's sRGB chunk: its rendering intent


def is_image_path(path: Path) -> bool:
    """A file mimocli reads as an image, by its extension."""
    return path.suffix.lower() in READABLE


def _heif() -> None:
    """HEIC/HEIF (phone photos) through the optional pillow-heif, when it is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Read ``path`` upright. Raises ImageError when it is missing, empty, not an image,
    truncated or corrupt, or larger than ``max_pixels`` (a decompression bomb)."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file", "check the path")
    if p.is_dir():
        raise ImageError(f"{p}: is a folder", "pass --recursive or a file")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file", "the file holds no data: copy or export it again")
    if p.suffix.lower() in (".heic", ".heif"):
        _heif()
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with a message that names the flag
    try:
        with Image.open(p) as im:
            w, h = im.size
            frames = getattr(im, "n_frames", 1)
            if frames > 1 and im.format in ("GIF", "WEBP", "PNG", "AVIF"):
                raise ImageError(
                    f"{p}: an animation of {frames} frames, not a photo",
                    f"deblur it as a video: mimo video {p} {p.stem}_deblurred.webm",
                )
            if max_pixels and w * h > max_pixels:
                raise ImageError(
                    f"{p}: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,} "
                    "(possible decompression bomb)",
                    "raise --max-pixels if you trust this file",
                )
            fmt = im.format or "PNG"
            exif = im.getexif()
            orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
            for tag in STORAGE_TAGS & set(exif):
                del exif[tag]
            raw_exif: bytes | None = None
            if len(exif):
                exif[EXIF_ORIENTATION] = 1
                raw_exif = exif.tobytes()
            icc = im.info.get("icc_profile") or None
            if im.mode == "CMYK":
                icc = None  # a CMYK profile does not describe the RGB pixels written out
            dpi = _dpi(im.info.get("dpi"))
            srgb = im.info.get("srgb") if isinstance(im.info.get("srgb"), int) else None
            xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp") or None
            if isinstance(xmp, str):
                xmp = xmp.encode()
            if _is_16bit_color(p, im):
                with Image.open(p) as check:  # Pillow finds truncation and bad CRCs quietly,
                    check.verify()  # where OpenCV would print libpng's complaints to stderr
                pixels = _read_cv2(p)
                if im.format == "PNG" and _png_ihdr(p)[1] == 4:  # gray+alpha, which readers widen to RGBA
                    pixels = np.ascontiguousarray(pixels[:, :, [0, 3]])
            else:
                pixels = _pixels_from_pillow(im, p)
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        # Pillow reads no float colour TIFF (as HDR tools and scanners write them); OpenCV does.
        floats = _read_float_tiff(p, max_pixels)
        if floats is None:
            raise ImageError(
                f"{p}: not an image, or a format we cannot read",
                "convert it to PNG, JPEG or TIFF (8 or 16 bits, or floats in 0..1)",
            ) from e
        pixels, fmt, raw_exif, icc, orientation, dpi, xmp, srgb = floats, "TIFF", None, None, 1, None, None, None
    except PermissionError as e:
        raise ImageError(f"{p}: cannot be read: permission denied", "check the file's permissions") from e
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as e:
        raise ImageError(
            f"{p}: truncated or corrupt image ({e})", "the file is damaged or cut short: copy or export it again"
        ) from e
    except Exception as e:  # a decoder bug on a malformed file is still one bad file
        raise ImageError(f"{p}: cannot be decoded ({type(e).__name__}: {e})", "the file may be damaged") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if pixels.size == 0:
        raise ImageError(f"{p}: image has no pixels", "pass an image of at least 1x1 pixels")
    return ImageFile(apply_orientation(pixels, orientation), fmt, raw_exif, icc, dpi, xmp, srgb)


def _dpi(value: object) -> tuple[float, float] | None:
    """Pillow's info["dpi"] (numbers, or TIFF rationals) as two floats, or None."""
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _is_16bit_color(path: Path, im: Image.Image) -> bool:
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "PNG":
        return _png_ihdr(path)[0] == 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258)  # type: ignore[attr-defined]  # BitsPerSample
        return bool(bits) and 16 in (bits if isinstance(bits, tuple) else (bits,))
    return False


def _png_ihdr(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR, or (-1, -1) for a file too short to hold one."""
    with open(path, "rb") as f:
        header = f.read(26)
    return (header[24], header[25]) if len(header) == 26 else (-1, -1)


def _read_float_tiff(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The pixels of a TIFF that Pillow cannot open (float colour, float16 or float64, 32-bit
    integers: what HDR tools, scanners and scientific cameras write), read with tifffile: floats
    as 16-bit (see ``_from_float``), integers in 0..65535 as 16-bit; None if it is no such TIFF.
    Raises ImageError for integers outside 0..65535, whose brightness the file does not state."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            h, w = page.imagelength, page.imagewidth
            if max_pixels and w * h > max_pixels:  # before its pixels are read, as for every other image
                raise ImageError(
                    f"{path}: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,} "
                    "(possible decompression bomb)",
                    "raise --max-pixels if you trust this file",
                )
            arr = np.asarray(tif.asarray())
    except ImageError:
        raise
    except Exception:  # tifffile raises many kinds for what is not a TIFF it can read
        return None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar samples: (C,H,W) -> (H,W,C)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        return None
    if arr.dtype.kind == "f":
        return _from_float(path, arr)
    if arr.dtype.kind in "iu":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageError(
                f"{path}: {arr.dtype} pixels from {lo} to {hi} have no defined brightness",
                "convert it to 8- or 16-bit first",
            )
        warnings.warn(f"{path}: {arr.dtype} pixels are read and written as 16-bit", UserWarning, stacklevel=3)
        return np.ascontiguousarray(arr.astype(np.uint16))
    return None


def _from_float(path: Path, arr: np.ndarray) -> np.ndarray:
    """Floating-point pixels in [0, 1] -> uint16, the deepest integer layout mimocli writes,
    with a warning. Raises ImageError for other ranges, whose meaning a file does not state."""
    arr = arr.astype(np.float32)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not np.isfinite(arr).all() or lo < -1e-3 or hi > 1 + 1e-3:
        raise ImageError(
            f"{path}: floating-point pixels outside 0..1 (from {lo:g} to {hi:g}) have no defined brightness",
            "convert it to 8- or 16-bit first",
        )
    warnings.warn(f"{path}: floating-point pixels are read and written as 16-bit", UserWarning, stacklevel=3)
    return np.rint(np.clip(arr, 0, 1) * 65535).astype(np.uint16)


def _read_cv2(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError("OpenCV could not decode it")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def _pixels_from_pillow(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError("32-bit integer pixels are not supported")
        return arr.astype(np.uint16)
    if mode == "F":
        return _from_float(path, np.asarray(im))
    if mode == "1":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, float...
    return np.asarray(im).copy()


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` (1..8) upright, as a viewer would show them."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a.swapaxes(0, 1), 2),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(arr)) if op else arr


def format_for(path: Path) -> str:
    """Raises OutputError for an extension we cannot write."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(
            f"{path}: cannot write {path.suffix or 'files without an extension'}",
            f"use one of {', '.join(sorted(FORMATS))}",
        )
    return fmt


def encode_image(
    pixels: np.ndarray,
    fmt: str,
    exif: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 95,
    dpi: tuple[float, float] | None = None,
    xmp: bytes | None = None,
) -> bytes:
    """Encode an array from ``read_image``'s layout. 16 bits stay 16 in PNG/TIFF, else become 8.

    JPEG has no alpha channel: it is dropped there. Raises ValueError on other layouts.
    """
    arr = pixels
    if arr.dtype == np.uint16 and fmt not in SIXTEEN_BIT_FORMATS:
        arr = np.rint(arr / 257.0).astype(np.uint8)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    if fmt == "JPEG" and arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr = arr[:, :, :-1]
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] == 2 and fmt == "PNG":
        return png_add_chunks(encode_png_gray_alpha16(arr), exif, icc)
    if arr.dtype == np.uint16 and arr.ndim == 3 and arr.shape[2] != 1 and fmt == "TIFF":
        return encode_tiff16(arr, exif, icc, dpi, xmp)
    if arr.dtype == np.uint16 and (arr.ndim == 3 and arr.shape[2] != 1):
        return encode_cv2_16(arr, fmt, exif, icc)
    if arr.dtype == np.uint16 and arr.ndim == 3:  # 16-bit grayscale goes through Pillow's I;16
        arr = arr[:, :, 0]
    im = Image.fromarray(arr)
    options: dict[str, object] = {}
    if exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["exif"] = exif
    if icc and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["icc_profile"] = icc
    if dpi and fmt in ("JPEG", "PNG", "TIFF", "BMP"):
        options["dpi"] = dpi
    if xmp and fmt in ("JPEG", "WEBP", "AVIF"):
        options["xmp"] = xmp
    elif xmp and fmt == "TIFF":  # tag 700, XMLPacket
        options["tiffinfo"] = {700: xmp}
    elif xmp and fmt == "PNG":  # PNG keeps XMP in an iTXt chunk of this name
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"), zip=False)
        options["pnginfo"] = info
    if fmt in LOSSY_FORMATS:
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0 if quality >= 90 else 2  # keep colour detail at high quality
    if fmt == "WEBP" and quality >= 100:
        options["lossless"] = True
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    exif: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 95,
    dpi: tuple[float, float] | None = None,
    xmp: bytes | None = None,
    replace: bool = True,
) -> Path:
    """Encode ``pixels`` in the format of ``path``'s extension and write it atomically, with the
    EXIF, ICC profile, DPI and XMP given where the format holds them (``replace`` False: never
    over a file that appeared meanwhile, see atomic_write).

    Raises OutputError for an unknown extension or an unwritable folder.
    """
    p = Path(path)
    return write_bytes_atomic(p, encode_image(pixels, format_for(p), exif, icc, quality, dpi, xmp), replace)


def write_like(
    path: str | os.PathLike[str], pixels: np.ndarray, source: ImageFile, quality: int = 95, replace: bool = True
) -> Path:
    """``write_image`` with everything ``source`` carried that the output format holds: EXIF,
    ICC profile, DPI, XMP and a PNG's sRGB chunk."""
    p = Path(path)
    fmt = format_for(p)
    data = encode_image(pixels, fmt, source.exif, source.icc, quality, source.dpi, source.xmp)
    if source.srgb is not None and not source.icc and fmt == "PNG" and b"sRGB" not in data[:4096]:
        ihdr_end = 8 + 8 + 13 + 4  # sRGB must come before the image data, and not beside an ICC profile
        data = data[:ihdr_end] + png_chunk(b"sRGB", bytes([source.srgb & 3])) + data[ihdr_end:]
    return write_bytes_atomic(p, data, replace)


def side_by_side(
    before: np.ndarray, after: np.ndarray, labels: tuple[str, str] = ("blurry", "deblurred")
) -> np.ndarray:
    """``before`` and ``after`` (same shape and dtype, as read_image returns) next to each other
    with a 4-pixel gap and each one's label in a dark band at its top left; same layout out.

    Raises ValueError when the two differ in shape or dtype."""
    if before.shape != after.shape or before.dtype != after.dtype:
        raise ValueError(f"cannot compare {before.shape} {before.dtype} with {after.shape} {after.dtype}")
    squeeze = before.ndim == 2
    a, b = (x[:, :, None] if squeeze else x for x in (before, after))
    h, _, c = a.shape
    gap = np.full((h, 4, c), int(np.iinfo(a.dtype).max), a.dtype)  # white (and opaque, where there is alpha)
    out = np.concatenate([labelled(a, labels[0]), gap, labelled(b, labels[1])], axis=1)
    return out[:, :, 0] if squeeze else out


def labelled(image: np.ndarray, text: str, right: bool = False, bottom: bool = False, size: float = 0.03) -> np.ndarray:
    """A copy of ``image`` (uint8 or uint16, (H,W) or (H,W,C)) with ``text`` in a dark band in its
    top left corner (``right``, ``bottom``: the others), letters about ``size`` of the shorter
    side high; alpha made opaque there."""
    squeeze = image.ndim == 2
    img = np.ascontiguousarray(image[:, :, None] if squeeze else image).copy()
    h, w, _ = img.shape
    peak = int(np.iinfo(img.dtype).max)
    scale = max(0.4, min(h, w) * size / 21)  # FONT_HERSHEY_SIMPLEX is 21 px high at scale 1
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(4, th // 2)
    band_h, band_w = min(h, th + base + 2 * pad), min(w, tw + 2 * pad)
    cols = slice(w - band_w, w) if right else slice(0, band_w)
    rows = slice(h - band_h, h) if bottom else slice(0, band_h)
    colour = img.shape[2] - (1 if img.shape[2] in (2, 4) else 0)
    band = (img[rows, cols, :colour] * 0.25).astype(img.dtype).astype(np.float64)  # darkened
    if img.shape[2] in (2, 4):
        img[rows, cols, -1] = peak
    mask = np.zeros((band_h, band_w), np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(mask, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    alpha = mask[:, :, None].astype(np.float64) / 255
    img[rows, cols, :colour] = np.rint(band * (1 - alpha) + peak * alpha).astype(img.dtype)
    return img[:, :, 0] if squeeze else img
