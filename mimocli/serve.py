"""`mimo serve`: a local web page to drop photos in and get them back deblurred, with a
before/after slider and a download, or several at once as a zip. Built on Gradio (the `serve`
extra); the photo job is the same as the CLI's: read with EXIF and ICC, deblurred by a Deblurrer,
written in the input's format (PNG for one that is only read) or the one chosen on the page."""

from __future__ import annotations

import functools
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import MimoError
from .registry import VARIANTS, get_variant, load_registry
from .settings import DEFAULT_MAX_PIXELS

TITLE = "mimo: deblur photos"
SAVE_AS = {"same as the photo": None, "PNG": ".png", "JPEG": ".jpg", "WebP": ".webp", "TIFF": ".tif"}


def availability(name: str, cache: str | os.PathLike[str] | None = None) -> str:
    """Whether a variant's weights are ``bundled`` (in the package), ``cached`` (downloaded or
    imported) or ``needs download``; a look at the cache, no hashing (a load verifies)."""
    from .cache import cache_dir, cached_weights

    entry = load_registry()[get_variant(name).weights_key]
    if entry.bundled is not None:
        return "bundled"
    return "cached" if cached_weights(entry.key, cache_dir(cache)).exists() else "needs download"


def model_choices(cache: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The model menu: (label, variant name), each label saying whether the weights are here."""
    return [(f"{v.name} ({availability(v.name, cache)})", v.name) for v in VARIANTS]


def build_app(
    variant: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    outdir: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile: int | str = "auto",
    cache: str | os.PathLike[str] | None = None,
) -> Any:
    """The Gradio Blocks of the page. ``weights`` fixes the model (the model menu is then
    hidden); otherwise the page offers every registered variant, starting with ``variant``, each
    marked bundled, cached or needs download, with a button that downloads the one chosen.
    Results go into ``outdir`` (default: a new private temporary folder), one folder per request."""
    import gradio as gr

    from .api import deblurrer
    from .images import labelled, read_image, write_like
    from .paths import SUFFIX, output_suffix
    from .weights import download_weights

    outdir = outdir or Path(tempfile.mkdtemp(prefix="mimo-serve-"))
    outdir.mkdir(parents=True, exist_ok=True)

    def one(src: Path, name: str, ensemble: bool, save_as: str, quality: int, folder: Path, progress: Any) -> Any:
        """Deblur one uploaded file into ``folder``; returns (read image, result, written path)."""
        image = read_image(src, max_pixels)
        d = deblurrer(None if weights else name, weights, cache_dir=cache, device=device, ensemble=ensemble, tile=tile)

        def tiles(done: int, total: int | None) -> None:
            if total and total > 1:
                progress((done, total), desc=f"{src.name}: tiles", unit="tiles")

        result = d(image.pixels, on_progress=tiles)
        folder.mkdir(exist_ok=True)
        dest = folder / f"{src.stem}{SUFFIX}{SAVE_AS.get(save_as) or output_suffix(src)}"
        write_like(dest, result.image, image, quality=quality, replace=False)
        return image, result, dest

    def friendly(e: MimoError, src: Path) -> Exception:
        return gr.Error(_said(e, src), print_exception=False)

    def run(
        path: str | None,
        name: str,
        ensemble: bool,
        save_as: str,
        quality: int,
        progress: Any = gr.Progress(),  # noqa: B008 (Gradio's way)
    ) -> tuple[Any, str]:
        if not path:
            raise gr.Error("Drop a photo first.", print_exception=False)
        src = Path(path)
        try:
            image, result, dest = one(src, name, ensemble, save_as, quality, _request_folder(outdir), progress)
        except MimoError as e:
            raise friendly(e, src) from None
        before, after = _preview(image.pixels), _preview(result.image)
        # at the bottom: the slider's own label and buttons cover its top corners
        before = labelled(before, "before", bottom=True, size=0.05)
        return (before, labelled(after, "after", right=True, bottom=True, size=0.05)), str(dest)

    def batch(
        paths: list[str] | None,
        name: str,
        ensemble: bool,
        save_as: str,
        quality: int,
        progress: Any = gr.Progress(),  # noqa: B008 (Gradio's way)
    ) -> tuple[str, str]:
        if not paths:
            raise gr.Error("Drop some photos first.", print_exception=False)
        folder = _request_folder(outdir)
        done: list[Path] = []
        failed: list[str] = []
        for i, path in enumerate(paths):
            src = Path(path)
            progress((i, len(paths)), desc=src.name, unit="photos")
            try:
                _, _, dest = one(src, name, ensemble, save_as, quality, folder / str(i), progress)
            except MimoError as e:
                failed.append(_said(e, src))
                continue
            done.append(dest)
        if not done:
            raise gr.Error(f"No photo could be deblurred: {failed[0]}", print_exception=False)
        archive = _zip(done, folder / "deblurred.zip")
        lines = [f"{len(done)} of {len(paths)} photos deblurred."] + [f"- {line}" for line in failed]
        return str(archive), "\n".join(lines)

    def get_model(name: str, progress: Any = gr.Progress()) -> tuple[Any, Any]:  # noqa: B008
        def fetched(done: int, total: int | None) -> None:
            progress((done, total), desc=f"{name}: downloading", unit="bytes")

        try:
            download_weights(get_variant(name).weights_key, cache, on_progress=fetched)
        except MimoError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return gr.update(choices=model_choices(cache), value=name), gr.update(visible=False)

    def fetchable(name: str) -> bool:  # the download button is for a model the page may change to
        return weights is None and availability(name, cache) == "needs download"

    def chosen(name: str) -> Any:
        return gr.update(visible=fetchable(name))

    def refreshed(name: str) -> tuple[Any, Any]:  # on every page load: weights fetched meanwhile count
        return gr.update(choices=model_choices(cache), value=name), chosen(name)

    start = get_variant(variant).name if variant else VARIANTS[1].name
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nMIMO-UNet (Cho et al., ICCV 2021) removes camera-shake and motion blur.")
        with gr.Row():
            model = gr.Dropdown(
                model_choices(cache), value=start, label="Model", visible=weights is None, elem_id="variant"
            )
            fetch = gr.Button("Download this model", visible=fetchable(start), elem_id="get-model")
        with gr.Row():
            save_as = gr.Dropdown(list(SAVE_AS), value="same as the photo", label="Save as", elem_id="save-as")
            quality = gr.Slider(1, 100, 95, step=1, label="Quality (JPEG, WebP; 100: lossless WebP)")
            ensemble = gr.Checkbox(False, label="Self-ensemble (8x slower, a little sharper)")
        with gr.Tab("One photo"), gr.Row():
            with gr.Column():
                # image_mode=None, and the file as uploaded: alpha and 16 bits kept as `mimo deblur` keeps them
                photo = gr.Image(type="filepath", image_mode=None, label="Blurry photo", elem_id="photo")
                photo.preprocess = functools.partial(_as_uploaded, photo.preprocess)  # type: ignore[method-assign]
                button = gr.Button("Deblur", variant="primary", elem_id="deblur")
            with gr.Column():
                slider = gr.ImageSlider(label="Before / after (drag the handle)", format="png", elem_id="slider")
                download = gr.File(label="Deblurred photo", elem_id="download")
        with gr.Tab("Several photos", elem_id="batch-tab"), gr.Row():
            with gr.Column():
                photos = gr.File(file_count="multiple", label="Blurry photos", elem_id="photos")
                button_all = gr.Button("Deblur all", variant="primary", elem_id="deblur-all")
            with gr.Column():
                archive = gr.File(label="Deblurred photos (zip)", elem_id="archive")
                summary = gr.Markdown(elem_id="summary")
        settings = [model, ensemble, save_as, quality]
        button.click(run, [photo, *settings], [slider, download], api_name="run")
        button_all.click(batch, [photos, *settings], [archive, summary], api_name="batch")
        fetch.click(get_model, [model], [model, fetch], api_name="download_model")
        model.change(chosen, [model], [fetch], api_visibility="private")
        app.load(refreshed, [model], [model, fetch], api_visibility="private")
    return app


def _as_uploaded(gradio_preprocess: Callable[[Any], Any], payload: Any) -> Any:
    """The uploaded file's path, as it came. Gradio's own preprocessing opens it with PIL first,
    which answers anything PIL cannot read (a float16 TIFF, a text file) with a raw error naming
    the server's path; the photo job reads it and says what is wrong in one line. (An instance
    attribute, not a subclass: Gradio writes a .pyi beside the module of every component class.)"""
    if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
        return payload.path
    return gradio_preprocess(payload)


def _said(error: MimoError, upload: Path) -> str:
    """The error's one line, naming the photo as the user knows it, not the server's copy."""
    return str(error).replace(str(upload), upload.name)


def _request_folder(outdir: Path) -> Path:
    """A new folder for one request's results, so that two results of one name never meet."""
    return Path(tempfile.mkdtemp(prefix="r", dir=outdir))


def _zip(files: list[Path], dest: Path) -> Path:
    """``files`` in a zip at ``dest`` (written whole, then renamed); a name met twice gets -2, -3..."""
    from .atomic import atomic_write

    seen: dict[str, int] = {}
    with atomic_write(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            n = seen[f.name] = seen.get(f.name, 0) + 1
            z.write(f, f.name if n == 1 else f"{f.stem}-{n}{f.suffix}")
    return dest


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
    tile: int | str = "auto",
    cache: str | os.PathLike[str] | None = None,
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
        blocks = build_app(variant, weights, device, work / "results", max_pixels, tile, cache)
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
