"""`mimo weights list|download|import`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import DownloadColumn, TransferSpeedColumn
from rich.table import Table

from mimocli import weights as w
from mimocli.registry import get_variant

from . import app, err, fail_on_error, out, progress_bar

weights_app = typer.Typer(help="List, download and import pretrained weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

CacheDir = typer.Option(None, "--cache-dir", help="Weights cache (default: $MIMO_CACHE_DIR or <HF cache>/mimocli).")


def byte_progress(quiet: bool = False):  # type: ignore[no-untyped-def]
    """A rich download bar on stderr and the callback that feeds it."""
    progress = progress_bar(DownloadColumn(), TransferSpeedColumn(), quiet=quiet)
    task = progress.add_task("weights", total=None)

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


@weights_app.command("list")
def list_weights(
    cache_dir: Path | None = CacheDir,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the registered weights, whether each is cached (or bundled in the package), its size and source."""
    with fail_on_error():
        rows = w.cache_listing(cache_dir)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Weights ({w.cache_dir(cache_dir)})")
    for col in ("name", "cached", "size", "published (dB PSNR)", "source"):
        table.add_column(col)
    for r in rows:
        metrics = ", ".join(f"{k} {m['psnr']}" for k, m in r["metrics"].items())
        size = f"{r['size'] / 1e6:.1f} MB" if r["size"] else "-"
        have = ("bundled" if r["cached"] else "missing (reinstall)") if r["bundled"] else "yes" if r["cached"] else "no"
        table.add_row(r["name"], have, size, metrics, r["source"] or "-")
    out.print(table)


@weights_app.command("download")
def download(
    variant: str = typer.Argument(..., help="mimo-unet (base), mimo-unet-plus (plus), mimo-unet-plus-realblur."),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    cache_dir: Path | None = CacheDir,
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download a variant's weights into the cache (needs the network once)."""
    with fail_on_error():
        key = get_variant(variant).weights_key
        progress, update = byte_progress(quiet)
        with progress:
            path = w.download_weights(key, cache_dir, force=force, on_progress=update)
    out.print(str(path))


@weights_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A .pkl/.pth checkpoint (e.g. the authors' MIMO-UNet.pkl) or .safetensors."),
    as_variant: str | None = typer.Option(None, "--as", help="Cache it as this registered variant's weights."),
    cache_dir: Path | None = CacheDir,
) -> None:
    """Detect the variant of a checkpoint, convert it to safetensors and cache it."""
    with fail_on_error():
        path, variant = w.import_weights(file, as_variant, cache_dir)
    err.print(f"{file}: {variant.name} ({variant.num_res} blocks per level)")
    out.print(str(path))
