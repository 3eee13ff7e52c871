"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path

import typer

from mimocli.errors import WeightsError
from mimocli.registry import get_variant
from mimocli.settings import PRECISIONS


def parse_precision(value: str) -> str:
    if value.strip().lower() not in PRECISIONS:
        raise typer.BadParameter(f"{value!r}: use one of {', '.join(PRECISIONS)}")
    return value.strip().lower()


def parse_variant(value: str | None) -> str | None:
    """An unknown variant is a usage error (exit 2), like every other bad option."""
    if value is None:
        return value
    try:
        get_variant(value)
    except WeightsError as e:
        raise typer.BadParameter(f"{e.message} ({e.hint})") from None
    return value


def parse_variant_or_all(value: str | None) -> str | None:
    return value if value is not None and value.strip().lower() == "all" else parse_variant(value)


VARIANT = typer.Option(
    None,
    "--variant",
    "-m",
    callback=parse_variant,
    help="mimo-unet (base), mimo-unet-plus (plus), mimo-unet-plus-plus, mimo-unet-plus-realblur.",
)
WEIGHTS = typer.Option(
    None,
    "--weights",
    "-w",
    help="Weights file (.safetensors/.pkl/.pth) or hf://owner/repo/file (optionally @revision).",
)
CACHE_DIR: Path | None = typer.Option(
    None, "--cache-dir", help="Weights cache (default: $MIMO_CACHE_DIR or <HF_HOME>/assets/mimocli/default/weights)."
)
DEVICE = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda, cuda:N or mps.")
PRECISION = typer.Option(
    "auto",
    "--precision",
    "-p",
    callback=parse_precision,
    help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32; fp32 on MPS), fp32, bf16, fp16.",
)
CHANNELS_LAST = typer.Option(
    None,
    "--channels-last/--no-channels-last",
    help="NHWC activations (faster with oneDNN and cuDNN). Default: on for CPU and CUDA.",
    show_default=False,
)
REUSE_MEMORY = typer.Option(
    True,
    "--reuse-memory/--no-reuse-memory",
    help="On CPU, keep freed memory for reuse instead of returning it to the system (glibc): 20% faster at 720p.",
)
TILE = typer.Option("auto", "--tile", "-t", help="Tile side in pixels; auto fits free memory; 0 never tiles.")
TILE_OVERLAP = typer.Option(64, "--tile-overlap", min=0, help="Overlap between tiles in pixels.")
ENSEMBLE = typer.Option(False, "--ensemble", help="Average the 8 flips/rotations (MIMO-UNet++); 8x slower.")
THREADS = typer.Option(0, "--threads", min=0, help="CPU threads for the network; 0: one per physical core.")


def compile_option(default_help: str) -> bool | None:
    return typer.Option(  # type: ignore[no-any-return]
        None,
        "--compile/--no-compile",
        help=f"torch.compile the network: pays over many frames of one size. Default: {default_help}.",
        show_default=False,
    )


VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Say the device, precision, tile size and weights used (file and sha256)."
)
