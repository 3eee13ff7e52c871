"""`mimo serve`: a local web page to drop photos in and get them back deblurred, with a
before/after slider and a download. Built on Gradio (the `serve` extra); the photo job is the
same as the CLI's: read with EXIF and ICC, deblurred by a Deblurrer, written in the input's format
(PNG for one that is only read)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import MimoError
from .registry import VARIANTS, get_variant
from .settings import DEFAULT_MAX_PIXELS

TITLE = "mimo: deblur photos"


def build_app(
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    outdir: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Any:
    """The Gradio Blocks of the page. ``weights`` fixes the model (the variant menu is then
    hidden); otherwise the page offers every registered variant, starting with ``variant``.
    Results go into ``outdir`` (default: a new private temporary folder)."""
    import gradio as gr

    from .api import deblurrer
    from .images import read_image, write_like
    from .paths import SUFFIX, output_suffix

    choices = [v.name for v in VARIANTS]
    outdir = outdir or Path(tempfile.mkdtemp(prefix="mimo-serve-"))

    def run(path: str | None, name: str, ensemble: bool) -> tuple[Any, str]:
        if not path:
            raise gr.Error("Drop a photo first.")
        src = Path(path)
        try:
            image = read_image(src, max_pixels)
            d = deblurrer(None if weights else name, weights, device=device, ensemble=ensemble)
            result = d(image.pixels)
            dest = outdir / f"{src.stem}{SUFFIX}{output_suffix(src)}"
            write_like(dest, result.image, image)
        except MimoError as e:  # one line, naming the photo as the user knows it, not the server's copy
            raise gr.Error(str(e).replace(str(src), src.name), print_exception=False) from None
        return (_preview(image.pixels), _preview(result.image)), str(dest)

    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nMIMO-UNet (Cho et al., ICCV 2021) removes camera-shake and motion blur.")
        with gr.Row():
            with gr.Column():
                # image_mode=None: the uploaded file reaches the job as it came (Gradio's default
                # converts it to 8-bit RGB first), so alpha and 16 bits are kept as `mimo deblur` keeps them.
                photo = gr.Image(type="filepath", image_mode=None, label="Blurry photo", elem_id="photo")
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_MAX_UPLOAD_MB = 200  # a 50-megapixel 16-bit TIFF is about 300 MB; a phone photo 5-15 MB


class LocalOnly:
    """An ASGI guard in front of the page, as a local server needs one: requests must name this
    server in their Host header (a page elsewhere that rebinds its DNS name to 127.0.0.1 names
    itself, and is refused), and a request a browser sends on behalf of another page (an Origin
    header that is not this server's own) is refused, uploads included. Listening on loopback,
    only the loopback names are this server; listening on another address, the Origin must be
    the Host the request came to."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app, self.port = app, port
        names = LOOPBACK if host in LOOPBACK else ()
        self.hosts = {f"{n}:{port}" if ":" not in n else f"[{n}]:{port}" for n in names}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            host = headers.get("host", "")
            origin = headers.get("origin")
            bad_host = bool(self.hosts) and host not in self.hosts
            bad_origin = origin is not None and origin not in (f"http://{host}", f"https://{host}")
            if bad_host or bad_origin:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"Forbidden: mimo serve answers only its own page on this machine\n"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    host: str = "127.0.0.1",
    port: int = 7860,
    open_browser: bool = False,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the page until interrupted (``on_ready`` gets its URL just before it listens).
    Nothing leaves this machine: Gradio's analytics off, no share link, uploads and results in one
    private folder (mode 0700) that is removed on exit, uploads over ``max_upload_mb`` refused,
    and only this server's own page answered (LocalOnly). Raises OSError when the port cannot be
    had (the CLI checks first)."""
    import shutil

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    work = Path(tempfile.mkdtemp(prefix="mimo-serve-"))  # private: 0700
    os.environ["GRADIO_TEMP_DIR"] = str(work / "uploads")
    try:
        import gradio as gr
        import uvicorn
        from fastapi import FastAPI

        (work / "results").mkdir()
        blocks = build_app(variant, weights, device, work / "results", max_pixels)
        page = gr.mount_gradio_app(
            FastAPI(),
            blocks,
            path="/",
            show_error=True,
            max_file_size=f"{max_upload_mb}mb",
            allowed_paths=[str(work)],
        )
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        if on_ready:
            on_ready(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        uvicorn.run(LocalOnly(page, host, port), host=host, port=port, log_level="warning", access_log=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
