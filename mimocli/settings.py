"""Defaults that the command line shows in its help, kept apart from the modules that use them
so that `mimo --help` need not import torch, PyAV or OpenCV to print them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How long work reports how far it is: (done, total); total None while unknown. The one progress
# callback of the library (the benchmarks report stages by name: bench.StageFn; training its
# steps and loss: train.StepFn).
ProgressFn = Callable[[int, int | None], None]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# What runs the network: torch everywhere; OpenVINO on the CPU for fp32 and bf16 where the
# openvino extra is installed; "auto" measures the two once per machine (mimocli.calibrate).
BACKENDS = ("auto", "torch", "openvino")
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb error threshold (2 x 89.5 MP)
DEFAULT_OVERLAP = 64  # pixels between tiles; 32 already agrees to 69 dB PSNR with the untiled output
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


@dataclass(frozen=True)
class RunSettings:
    """How a model runs: built once (by the command line, the Python API or a worker) and passed
    whole. Nothing here depends on the model or the input; torch is not needed to make one.

    ``device``: auto, cpu, cuda, cuda:N or mps. ``precision``: one of PRECISIONS.
    ``channels_last``: NHWC activations; None: on for CPU and CUDA. ``tile``: "auto" (fit the
    device's free memory), 0 (never tile) or a side in pixels. ``ensemble``: average the 8
    flips/rotations (MIMO-UNet++). ``compile``: torch.compile, True, False or "auto" (decided
    per run by its size). ``backend``: one of BACKENDS. ``threads``: CPU threads, 0 for torch's
    default. ``batch``: frames per forward pass. ``reuse_memory``: keep freed memory in the
    process on CPU (glibc; the caller turns it on, see device.reuse_freed_memory).
    """

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    tile: int | str = "auto"
    tile_overlap: int = DEFAULT_OVERLAP
    ensemble: bool = False
    compile: bool | str = False
    backend: str = "auto"
    threads: int = 0
    batch: int = 1
    reuse_memory: bool = True

    def __post_init__(self) -> None:
        if self.precision.strip().lower() not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "precision", self.precision.strip().lower())
        if self.backend.strip().lower() not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "backend", self.backend.strip().lower())
        if isinstance(self.tile, str):
            if self.tile.strip().lower() != "auto":
                raise ValueError(f"tile must be 'auto', 0 or a positive size, not {self.tile!r}")
            object.__setattr__(self, "tile", "auto")
        elif self.tile < 0:
            raise ValueError(f"tile must be 'auto', 0 or a positive size, not {self.tile}")
        if self.tile_overlap < 0:
            raise ValueError(f"tile overlap must be >= 0, not {self.tile_overlap}")
        if not isinstance(self.compile, bool) and self.compile != "auto":
            raise ValueError(f"compile must be True, False or 'auto', not {self.compile!r}")
        if self.threads < 0 or self.batch < 1:
            raise ValueError(f"threads must be >= 0 and batch >= 1, not {self.threads} and {self.batch}")

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    def report(self) -> dict[str, Any]:
        """How a settled run runs, as --json and a video's manifest say it: the kind of device
        ("cuda:1" -> "cuda", which is what the output depends on), precision, backend, channels-last,
        compile, ensemble, tile and batch."""
        return {
            "device": self.device.split(":", 1)[0],
            "precision": self.precision,
            "backend": self.backend,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "ensemble": self.ensemble,
            "tile": self.tile,
            "batch": self.batch,
        }


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how wide a run goes on Ray (the ``ray`` extra). ``address``: "auto" (the running
    cluster, RAY_ADDRESS as Ray reads it), "local" (a private cluster on this machine) or a Ray
    address such as ray://host:10001. ``replicas``: model replicas, 0 for as many as the cluster's
    free CPUs (or GPUs, with ``gpus``) hold; ``cpus`` and ``gpus``: what one replica takes."""

    address: str = "local"
    replicas: int = 0
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.cpus < 0 or self.gpus < 0 or not (self.cpus or self.gpus):
            raise ValueError("replicas, cpus and gpus must be >= 0, and a replica needs a CPU or a GPU")
