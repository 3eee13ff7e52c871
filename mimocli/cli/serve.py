"""`mimo serve`: the local web page (the optional `serve` extra)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from pathlib import Path

import typer

from mimocli.settings import DEFAULT_MAX_PIXELS

from . import options
from .console import app, out, report


@app.command("serve")
def serve_command(
    variant: str | None = options.VARIANT,
    weights: str | None = options.WEIGHTS,
    device: str = options.DEVICE,
    tile: str = options.TILE,
    cache_dir: Path | None = options.CACHE_DIR,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: the whole network)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    max_upload_mb: int = typer.Option(200, "--max-upload-mb", min=1, help="Refuse larger uploads (MB)."),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, "--max-pixels", min=0, help="Refuse larger images (decompression bombs); 0: no limit."
    ),
) -> None:
    """A local web page: drop photos, pick the model, see before/after with a slider, download one or a zip."""
    # Found without importing it: Gradio reads its temporary folder and analytics settings from
    # the environment when it is imported, which mimocli.serve.serve sets first.
    if importlib.util.find_spec("gradio") is None:
        report('mimo serve needs Gradio (not installed) (pip install "mimocli[serve]")')
        raise typer.Exit(1)
    from mimocli.serve import serve

    tiles = options.parse_tile(tile)
    if weights is not None and not weights.startswith("hf://") and not Path(weights).exists():
        report(f"{weights}: no such weights file (check the path given to --weights)")
        raise typer.Exit(1)
    try:  # a busy port is one line now, not a traceback from the server later
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        report(f"cannot listen on {host}:{port} ({e.strerror or e}) (pass another --port, e.g. --port {port + 1})")
        raise typer.Exit(1) from None

    def ready(url: str) -> None:
        out.print(f"Open {url} in a browser (Ctrl-C to stop)", markup=False, highlight=False)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops; its folder is removed on the way
            serve(
                variant, weights, device, host, port, open_browser, max_upload_mb, max_pixels, ready, tiles, cache_dir
            )
    except ImportError as e:  # Gradio (or what it needs) is there but cannot be imported
        report(f'mimo serve needs Gradio, which cannot be imported ({e}) (pip install "mimocli[serve]")')
        raise typer.Exit(1) from None
