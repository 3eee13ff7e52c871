"""`mimo serve`: the local web page (the optional `serve` extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from . import options
from .console import app, report


@app.command("serve")
def serve_command(
    variant: str | None = options.VARIANT,
    weights: str | None = options.WEIGHTS,
    device: str = options.DEVICE,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: the whole network)."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
) -> None:
    """A local web page: drop a photo, pick the model, see before/after with a slider, download."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        report('mimo serve needs Gradio (not installed) (pip install "mimocli[serve]")')
        raise typer.Exit(1) from None
    from mimocli.serve import serve

    if weights is not None and not weights.startswith("hf://") and not Path(weights).exists():
        report(f"{weights}: no such weights file (check the path given to --weights)")
        raise typer.Exit(1)
    serve(variant, weights, device, host, port, open_browser)
