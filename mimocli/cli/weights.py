"""`mimo weights list|download|import`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import DownloadColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from mimocli.errors import MimoError
from mimocli.registry import get_variant

from .console import app, err, fail_on_error, out, print_table, progress_bar, report
from .options import parse_variant, parse_variant_or_all

weights_app = typer.Typer(help="List, download and import pretrained weights.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

CacheDir = typer.Option(
    None, "--cache-dir", help="Weights cache (default: $MIMO_CACHE_DIR or <HF_HOME>/assets/mimocli/default/weights)."
)


def byte_progress(quiet: bool = False):  # type: ignore[no-untyped-def]
    """A rich download bar on stderr and the callback that feeds it."""
    progress = progress_bar(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), quiet=quiet)
    task = progress.add_task("weights", total=None, unit="bytes")

    def update(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


@weights_app.command("list")
def list_weights(
    cache_dir: Path | None = CacheDir,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the registered weights, whether each is cached (or bundled in the package), its size and source."""
    from mimocli import cache as w  # no torch: a listing needs no model

    with fail_on_error():
        rows = w.cache_listing(cache_dir)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"Weights ({escape(str(w.cache_dir(cache_dir)))})")
    for col in ("name", "cached", "size", "sha256", "PSNR (dB)", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        metrics = ", ".join(f"{k} {m['psnr']}" for k, m in r["metrics"].items())
        size = f"{r['size'] / 1e6:.1f} MB" if r["size"] else "-"
        have = ("bundled" if r["cached"] else "missing (reinstall)") if r["bundled"] else "yes" if r["cached"] else "no"
        if r["intact"] is False:
            fix = (
                "reinstall"
                if r["bundled"]
                else "import it again"
                if r["name"].startswith("imported/")
                else (f"mimo weights download {r['name']} --force")
            )
            have = f"damaged ({fix})"
        sha = f"{r['sha256'][:12]}…" if r["sha256"] else "-"
        table.add_row(escape(r["name"]), have, size, sha, metrics or "-", escape(r["source"] or "-"))
    print_table(table)


@weights_app.command("download")
def download(
    variant: str = typer.Argument(
        ...,
        callback=parse_variant_or_all,
        help="mimo-unet (base), mimo-unet-plus (plus), mimo-unet-plus-realblur, or all.",
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    cache_dir: Path | None = CacheDir,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download a variant's weights into the cache (needs the network once); all: every registered file."""
    from mimocli import weights as w  # torch: imported when the command runs

    with fail_on_error():
        if variant.strip().lower() == "all":
            keys = [k for k, e in w.load_registry().items() if e.bundled is None]
        else:
            keys = [get_variant(variant).weights_key]
    failed = 0
    for key in keys:
        try:
            progress, update = byte_progress(quiet)
            with progress:
                path = w.download_weights(key, cache_dir, force=force, on_progress=update)
        except MimoError as e:
            failed += 1
            report(e)
            continue
        out.print(str(path), markup=False)
    if failed:
        raise typer.Exit(1)


@weights_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A .pkl/.pth checkpoint (e.g. the authors' MIMO-UNet.pkl) or .safetensors."),
    as_variant: str | None = typer.Option(
        None, "--as", callback=parse_variant, help="Cache it as this registered variant's weights."
    ),
    cache_dir: Path | None = CacheDir,
) -> None:
    """Detect the variant of a checkpoint, convert it to safetensors and cache it."""
    from mimocli import weights as w  # torch: imported when the command runs

    with fail_on_error():
        path, variant = w.import_weights(file, as_variant, cache_dir)
    where = (
        f"now the {get_variant(as_variant).weights_key} weights"
        if as_variant
        else "kept apart from the registered weights: use it with --weights, or import it --as a variant"
    )
    err.print(f"{file}: {variant.name} ({variant.shape()}), {where}", markup=False)
    out.print(str(path), markup=False)
