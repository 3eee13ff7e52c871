"""Defaults that the command line shows in its help, kept apart from the modules that use them
so that `mimo --help` need not import torch, PyAV or OpenCV to print them."""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb error threshold (2 x 89.5 MP)
DEFAULT_CHECKPOINT = 120  # frames per segment: 5 s at 24 fps, the most work an interruption loses

# Extension -> Pillow format. 16-bit colour is written by OpenCV, for PNG and TIFF only.
FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".avif": "AVIF",
}
# Read (by Pillow; HEIC/HEIF with the optional pillow-heif) but not written: the result is a PNG,
# which keeps 16 bits and alpha.
READ_ONLY = frozenset(
    (".gif", ".heic", ".heif", ".jp2", ".j2k", ".jpf", ".jpx", ".jfif", ".jpe", ".tga", ".qoi", ".ppm", ".pgm")
    + (".pbm", ".pnm", ".pcx", ".sgi", ".dds", ".ico", ".psd")
)
READABLE = frozenset(FORMATS) | READ_ONLY
