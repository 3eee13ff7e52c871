"""16-bit writers for what Pillow cannot write: 16-bit colour PNG and TIFF, and 16-bit
gray+alpha PNG, each with the EXIF and ICC profile (and for TIFF the DPI and XMP) kept."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import cv2
import numpy as np
from PIL import Image

# TIFF tags that describe how the pixels are stored. A TIFF's first IFD is both its EXIF and its
# image structure, so these come along with the EXIF of a TIFF and must not reach an output,
# where they would contradict the pixels written (a float SampleFormat on 8-bit data, say).
STORAGE_TAGS = frozenset(
    (254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291)
    + (317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 34675)
    + tuple(range(512, 522))
    + (529, 530, 531, 532)
)


def encode_cv2_16(arr: np.ndarray, fmt: str, exif: bytes | None, icc: bytes | None) -> bytes:
    code = cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", cv2.cvtColor(arr, code))
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {fmt}")
    data = buf.tobytes()
    if fmt == "PNG":
        data = png_add_chunks(data, exif, icc)
    return data


def encode_tiff16(
    arr: np.ndarray,
    exif: bytes | None,
    icc: bytes | None,
    dpi: tuple[float, float] | None,
    xmp: bytes | None,
) -> bytes:
    """A 16-bit RGB(A) or gray+alpha TIFF through imageio's tifffile plugin (Pillow writes no
    16-bit colour TIFF; OpenCV writes no metadata), deflate-compressed, with the ICC profile,
    DPI, XMP and the EXIF tags of the first IFD (camera, date, artist, copyright). The EXIF
    sub-IFD (exposure details) has no writer here and is left out."""
    import imageio.v3 as iio

    tags: list[tuple[int, str, int, object, bool]] = []
    if exif:
        fields = Image.Exif()
        fields.load(exif)
        for tag, value in fields.items():
            if isinstance(value, str) and value and tag not in STORAGE_TAGS and tag != 700:
                tags.append((tag, "s", 0, value, True))
    if xmp:
        tags.append((700, "B", len(xmp), xmp, True))
    options: dict[str, Any] = {"compression": "zlib", "metadata": None, "extratags": tags}
    if icc:
        options["iccprofile"] = icc
    if dpi:
        options["resolution"], options["resolutionunit"] = dpi, "INCH"
    if arr.shape[2] == 2:  # 16-bit gray+alpha TIFFs are unreadable to Pillow: written as RGBA
        arr = arr[:, :, [0, 0, 0, 1]]
    options.update(photometric="rgb", extrasamples=[2] if arr.shape[2] == 4 else [])  # unassociated alpha
    data = iio.imwrite("<bytes>", np.ascontiguousarray(arr), extension=".tif", plugin="tifffile", **options)
    return data  # "<bytes>": imwrite returns the file


def encode_png_gray_alpha16(arr: np.ndarray) -> bytes:
    """(H,W,2) uint16 -> a 16-bit gray+alpha PNG (colour type 4), which neither Pillow nor OpenCV
    writes. Each row is filtered with Up (PNG filter 2), which suits photos well enough."""
    h, w = arr.shape[:2]
    rows = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * 4)  # 2 samples of 2 bytes
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter defines
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, 6))
        + png_chunk(b"IEND", b"")
    )


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_add_chunks(png: bytes, exif: bytes | None, icc: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (both must precede the image data)."""
    ihdr_end = 8 + 8 + 13 + 4
    extra = b""
    if icc:
        extra += png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        extra += png_chunk(b"eXIf", body)
    return png[:ihdr_end] + extra + png[ihdr_end:]
