"""`mimo serve`: a local web page to drop photos in and get them back deblurred, with a
before/after slider and a download. Built on Gradio (the `serve` extra); the photo job is the
same as the CLI's: read with EXIF and ICC, deblurred by a Deblurrer, written in the input's format
(PNG for one that is only read)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import MimoError
from .registry import VARIANTS, get_variant

TITLE = "mimo: deblur photos"


def build_app(variant: str | None = None, weights: str | os.PathLike[str] | None = None, device: str = "auto") -> Any:
    """The Gradio Blocks of the page. ``weights`` fixes the model (the variant menu is then
    hidden); otherwise the page offers every registered variant, starting with ``variant``."""
    import gradio as gr

    from .api import deblurrer
    from .images import read_image, write_like
    from .paths import SUFFIX, output_suffix

    choices = [v.name for v in VARIANTS]
    outdir = Path(tempfile.mkdtemp(prefix="mimo-serve-"))

    def run(path: str | None, name: str, ensemble: bool) -> tuple[Any, str]:
        if not path:
            raise gr.Error("Drop a photo first.")
        src = Path(path)
        try:
            image = read_image(src)
            d = deblurrer(None if weights else name, weights, device=device, ensemble=ensemble)
            result = d(image.pixels)
            dest = outdir / f"{src.stem}{SUFFIX}{output_suffix(src)}"
            write_like(dest, result.image, image)
        except MimoError as e:
            raise gr.Error(str(e)) from None
        return (_preview(image.pixels), _preview(result.image)), str(dest)

    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nMIMO-UNet (Cho et al., ICCV 2021) removes camera-shake and motion blur.")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="filepath", label="Blurry photo", elem_id="photo")
                start = get_variant(variant).name if variant else choices[1]
                name = gr.Dropdown(choices, value=start, label="Model", visible=weights is None, elem_id="variant")
                ensemble = gr.Checkbox(False, label="Self-ensemble (8x slower, a little sharper)")
                button = gr.Button("Deblur", variant="primary", elem_id="deblur")
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after", elem_id="slider")
                download = gr.File(label="Deblurred photo", elem_id="download")
        button.click(run, [photo, name, ensemble], [slider, download])
    return app


def _preview(pixels: Any) -> Any:
    """8-bit RGB(A) for the browser: 16 bits scaled down, gray repeated."""
    import numpy as np

    arr = pixels
    if arr.dtype == np.uint16:
        arr = np.rint(arr / 257.0).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[:, :, [0, 0, 0, 1]]
    return arr


def serve(
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    host: str = "127.0.0.1",
    port: int = 7860,
    open_browser: bool = False,
) -> None:
    """Serve the page until interrupted (Gradio's own server; nothing leaves this machine)."""
    build_app(variant, weights, device).launch(
        server_name=host, server_port=port, inbrowser=open_browser, share=False, quiet=True, show_error=True
    )
