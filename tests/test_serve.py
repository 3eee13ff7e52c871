"""`mimo serve` in a real browser: headless Chromium (Debian's) driven by Playwright loads the page,
uploads a photo, waits for the result, downloads it and takes a screenshot."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimocli.images import read_image, write_image

from .conftest import SHARED, photo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {seconds} s")


class Served:
    """A `mimo serve` process on a free port of 127.0.0.1, answering; ``stderr`` once it stopped."""

    def __init__(self, proc: subprocess.Popen[str], url: str, port: int) -> None:
        self.proc, self.url, self.port = proc, url, port
        self.stderr = ""


@contextlib.contextmanager
def serving(*args: object, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run `mimo serve ARGS --port P` until the block ends, then stop it as Ctrl-C does."""
    port = _free_port()
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    cmd = [sys.executable, "-m", "mimocli", "serve", *map(str, args), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    served = Served(proc, f"http://127.0.0.1:{port}/", port)
    try:
        _wait(served.url, proc)
        yield served
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            served.stderr = proc.communicate(timeout=30)[1]
        finally:
            proc.kill()


def test_without_gradio_the_command_says_which_extra(tmp_path, tiny_weights):
    blocker = tmp_path / "block" / "gradio"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('no gradio here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    done = subprocess.run(
        [sys.executable, "-m", "mimocli", "serve", "-w", tiny_weights], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1 and 'pip install "mimocli[serve]"' in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
@pytest.mark.parametrize("network", ["MIMO-UNet", "XYDeblur"])
def test_page_in_a_real_browser(tmp_path, tiny_weights, network):
    pytest.importorskip("gradio")
    playwright = pytest.importorskip("playwright.sync_api")
    weights = tiny_weights
    if network == "XYDeblur":  # the authors' network, under their keys (the parity fixture's weights)
        weights = SHARED / "reference" / "xydeblur" / "xydeblur_random.safetensors"
        if not weights.exists():
            pytest.skip("../shared is not beside this checkout")
    src = write_image(tmp_path / "street.jpg", photo(96, 128))
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    cmd = [sys.executable, "-m", "mimocli", "serve", "-w", weights, "--device", "cpu", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(url, proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url, wait_until="networkidle")
            assert page.title() == "mimo: deblur photos"
            page.locator("#photo input[type=file]").set_input_files(str(src))
            page.locator("#photo img").first.wait_for(timeout=30_000)
            page.locator("#deblur").click()
            link = page.locator("#download a").first
            link.wait_for(timeout=120_000)
            href = link.get_attribute("href")
            assert href and href.endswith("street_deblurred.jpg")
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        result = tmp_path / "result.jpg"
        with urllib.request.urlopen(href if href.startswith("http") else url + href.lstrip("/")) as r:
            result.write_bytes(r.read())
        assert read_image(result).pixels.shape == (96, 128, 3)
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
        assert pixels.std() > 10  # not a blank page
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_the_page_starts_on_the_variant_asked_for_by_alias():
    pytest.importorskip("gradio")
    from mimocli.serve import build_app

    app = build_app("lite")
    menus = {b.elem_id: b.value for b in app.blocks.values() if type(b).__name__ == "Dropdown"}
    assert menus == {"variant": "mimo-unet-lite", "save-as": "same as the photo"}


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "mimo-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _status(url: str, data: bytes | None = None, **headers: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_the_server_says_where_it_is_answers_only_its_own_page_and_leaves_nothing(tmp_path, tiny_weights):
    """As a local server should: the URL printed at start; a request naming another host (DNS
    rebinding) or sent by another site's page (a cross-site upload) refused; uploads over the
    limit refused; a busy port one line; its temporary files gone after Ctrl-C."""
    pytest.importorskip("gradio")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env["TMPDIR"] = str(tmp)
    args = ["-w", tiny_weights, "-d", "cpu"]
    with serving(*args, "--max-upload-mb", "1", env=env) as served:
        url, port, proc = served.url, served.port, served.proc
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"Open {url} in a browser (Ctrl-C to stop)"
        assert _status(url)[0] == 200
        assert _status(url, Host="evil.example")[0] == 403  # a rebound DNS name
        status, headers = _status(url, Origin="http://evil.example")
        assert status == 403 and "evil.example" not in str(headers)
        body, kind = _multipart("huge.png", b"\0" * 100)
        upload = url + "gradio_api/upload"
        assert _status(upload, body, **{"Content-Type": kind, "Origin": "http://evil.example"})[0] == 403
        assert _status(upload, body, **{"Content-Type": kind, "Origin": url.rstrip("/")})[0] == 200
        big, kind = _multipart("huge.png", os.urandom(2 << 20))
        assert _status(upload, big, **{"Content-Type": kind, "Origin": url.rstrip("/")})[0] == 413  # over 1 MB
        cmd = [sys.executable, "-m", "mimocli", "serve", *map(str, args), "--port", str(port)]
        busy = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and f"--port {port + 1}" in busy.stderr
        left = [p.name for p in tmp.iterdir()]
        assert len(left) == 1 and left[0].startswith("mimo-serve-"), left  # one private folder for everything
    assert list(tmp.iterdir()) == []  # uploads and results went with it


def test_the_page_keeps_alpha_and_16_bits_as_mimo_deblur_does(tmp_path, tiny_weights):
    """The uploaded file reaches the photo job as it came: a 16-bit RGBA PNG comes back 16-bit
    RGBA (Gradio's default would have made it 8-bit RGB first)."""
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    deep = np.dstack([photo(48, 64, dtype=np.uint16), np.full((48, 64), 40000, np.uint16)])
    src = write_image(tmp_path / "deep.png", deep)
    with serving("-w", tiny_weights, "-d", "cpu") as served:
        url = served.url
        client = Client(url, verbose=False, download_files=str(tmp_path / "got"))
        _slider, result = client.predict(
            handle_file(str(src)), "mimo-unet-lite", False, "same as the photo", 95, api_name="/run"
        )
        pixels = read_image(result).pixels
        assert pixels.dtype == np.uint16 and pixels.shape == (48, 64, 4)
        assert np.array_equal(pixels[:, :, 3], deep[:, :, 3])  # the alpha plane untouched
        frames = [Image.fromarray(photo(32, 32, seed=i)) for i in range(3)]
        frames[0].save(tmp_path / "holiday.gif", save_all=True, append_images=frames[1:])
        with pytest.raises(Exception) as e:  # the page's error, as the client receives it
            client.predict(
                handle_file(str(tmp_path / "holiday.gif")),
                "mimo-unet-lite",
                False,
                "same as the photo",
                95,
                api_name="/run",
            )
        said = str(e.value)
        assert "holiday.gif: an animation of 3 frames" in said and "mimo-serve-" not in said  # no server path
    assert "Traceback" not in served.stderr  # an error shown in the page is no traceback in the terminal


def test_the_model_menu_says_which_weights_are_here(tmp_path):
    pytest.importorskip("gradio")
    from mimocli.cache import cache_dir, cached_weights
    from mimocli.serve import availability, model_choices

    assert availability("lite") == "bundled"
    assert availability("base") == "needs download"
    assert availability("++") == availability("plus") == "needs download"  # one file for both
    path = cached_weights("mimo-unet-plus", cache_dir())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    labels = {name: label for label, name in model_choices()}
    assert labels["mimo-unet-plus"] == "mimo-unet-plus (cached)"
    assert labels["mimo-unet-plus-plus"] == "mimo-unet-plus-plus (cached)"
    assert labels["mimo-unet-lite"] == "mimo-unet-lite (bundled)"
    assert labels["mimo-unet"] == "mimo-unet (needs download)"


def test_a_tiled_photo_reports_its_tiles_to_the_page(tmp_path, tiny_weights):
    """The page's job feeds Gradio's progress bar (percent and ETA) with tile counts while a
    tiled photo runs, and its slider shows the two images labelled before (bottom left) and after
    (bottom right)."""
    pytest.importorskip("gradio")
    import mimocli
    from mimocli.serve import build_app

    app = build_app(weights=tiny_weights, device="cpu", outdir=tmp_path / "out", tile=64)
    assert not (Path(mimocli.__file__).parent / "serve.pyi").exists()  # Gradio writes one for a component class
    run = next(f.fn for f in app.fns.values() if f.name == "run")
    src = write_image(tmp_path / "wide.png", photo(150, 200))
    seen: list[tuple[tuple[int, int], str, str]] = []
    (before, after), dest = run(
        str(src), "ignored", False, "same as the photo", 95, lambda p, desc, unit: seen.append((p, desc, unit))
    )
    assert seen and all(unit == "tiles" and desc == "wide.png: tiles" for _, desc, unit in seen)
    totals = {total for (_, total), _, _ in seen}
    assert len(totals) == 1 and totals.pop() > 1 and seen[-1][0][0] == seen[-1][0][1]  # counted to the end
    assert dest.endswith("wide_deblurred.png") and read_image(dest).pixels.shape == (150, 200, 3)
    plain = photo(150, 200)
    corner = (slice(-12, None), slice(0, 30))
    assert np.median(before[corner]) < np.median(plain[corner]) * 0.5  # the dark band of the label, bottom left
    assert np.array_equal(before[:100, :], plain[:100, :])  # and nothing else touched
    result = read_image(dest).pixels
    assert np.median(after[-12:, -30:]) < np.median(result[-12:, -30:]) * 0.5  # "after", bottom right
    assert np.array_equal(after[:100, :], result[:100, :])


def test_several_photos_in_a_zip_out_in_the_format_asked_for(tmp_path, tiny_weights):
    """Through the page's API as a client sends it: a batch of three (two of one name from two
    folders, one that is no photo) comes back as a zip of two with a summary naming the third;
    "Save as" and quality reach the file (WebP at 100 is lossless: the PNG's very pixels); a file
    that is no image is one line naming it, not Gradio's dump with the server's path."""
    pytest.importorskip("gradio")
    import zipfile

    from gradio_client import Client, handle_file

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_image(tmp_path / "a" / "street.jpg", photo(48, 64, seed=1))
    second = write_image(tmp_path / "b" / "street.jpg", photo(48, 64, seed=2))
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"these are notes, not a picture")
    with serving("-w", tiny_weights, "-d", "cpu") as served:
        url = served.url
        client = Client(url, verbose=False, download_files=str(tmp_path / "got"))
        files = [handle_file(str(p)) for p in (first, second, junk)]
        archive, summary = client.predict(files, "mimo-unet-lite", False, "same as the photo", 95, api_name="/batch")
        with zipfile.ZipFile(archive) as z:
            assert sorted(z.namelist()) == ["street_deblurred-2.jpg", "street_deblurred.jpg"]
            z.extractall(tmp_path / "unzipped")
        assert read_image(tmp_path / "unzipped" / "street_deblurred.jpg").pixels.shape == (48, 64, 3)
        assert summary.splitlines()[0] == "2 of 3 photos deblurred."
        assert "notes.png: not an image" in summary and "mimo-serve-" not in summary

        def one(save_as: str, quality: int) -> str:
            return str(
                client.predict(handle_file(str(first)), "mimo-unet-lite", False, save_as, quality, api_name="/run")[1]
            )

        png, webp = one("PNG", 95), one("WebP", 100)
        assert png.endswith("street_deblurred.png") and webp.endswith("street_deblurred.webp")
        assert np.array_equal(read_image(png).pixels, read_image(webp).pixels)
        assert os.path.getsize(one("JPEG", 20)) < os.path.getsize(one("JPEG", 95))
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(junk)), "mimo-unet-lite", False, "PNG", 95, api_name="/run")
        assert "notes.png: not an image" in str(e.value) and "mimo-serve-" not in str(e.value)
        assert "cannot identify" not in str(e.value)  # PIL's words, from Gradio's own reading, before
    assert "Traceback" not in served.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_a_model_that_needs_downloading_is_marked_and_fetched_from_the_page(tmp_path):
    """In a real browser: the menu marks MIMO-UNet "needs download" and offers a button; the
    button fetches it (from a file host on 127.0.0.1 in Google Drive's place, the real download
    code), the menu then says "cached" and the button goes; the batch tab takes several photos
    and gives back a zip with a summary."""
    pytest.importorskip("gradio")
    playwright = pytest.importorskip("playwright.sync_api")
    import io
    import zipfile

    import torch

    from mimocli.arch import MIMOUNet

    from .test_weights import Server

    torch.manual_seed(3)
    checkpoint = io.BytesIO()  # shaped as the authors' MIMO-UNet.pkl: {'model': {'module.…': …}}
    torch.save({"model": {f"module.{k}": v for k, v in MIMOUNet(8).state_dict().items()}}, checkpoint)
    host = Server(checkpoint.getvalue())
    good = write_image(tmp_path / "street.jpg", photo(48, 64))
    frames = [Image.fromarray(photo(32, 32, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "holiday.gif", save_all=True, append_images=frames[1:])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env["MIMO_GDRIVE_URL"] = host.url
    try:
        with serving("--variant", "base", "-d", "cpu", env=env) as served:
            url = served.url
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(url, wait_until="networkidle")
                expect = playwright.expect
                expect(page.locator("#variant input")).to_have_value("mimo-unet (needs download)")
                expect(page.locator("#get-model")).to_be_visible()
                page.locator("#get-model").click()
                expect(page.locator("#variant input")).to_have_value("mimo-unet (cached)", timeout=120_000)
                expect(page.locator("#get-model")).to_be_hidden()
                assert host.requests  # fetched from the host, by the real download code
                page.get_by_role("tab", name="Several photos").click()
                page.locator("#photos input[type=file]").set_input_files([str(good), str(tmp_path / "holiday.gif")])
                expect(page.locator("#photos a[href$='holiday.gif']")).to_be_visible(timeout=30_000)  # uploaded
                page.locator("#deblur-all").click()
                link = page.locator("#archive a").first
                link.wait_for(timeout=120_000)
                href = link.get_attribute("href")
                expect(page.locator("#summary")).to_contain_text("1 of 2 photos deblurred")
                expect(page.locator("#summary")).to_contain_text("holiday.gif: an animation of 3 frames")
                browser.close()
            assert href and href.endswith("deblurred.zip")
            with urllib.request.urlopen(href if href.startswith("http") else url + href.lstrip("/")) as r:
                names = zipfile.ZipFile(io.BytesIO(r.read())).namelist()
            assert names == ["street_deblurred.jpg"]
    finally:
        host.close()


def test_a_model_downloaded_into_the_page_s_cache_folder_is_the_one_it_runs(tmp_path, monkeypatch):
    """With --cache-dir, the menu, the download button and the deblurring all use that folder: a
    model fetched there is deblurred with offline, from there (the load looked in the default
    cache before, and so tried to download again)."""
    pytest.importorskip("gradio")
    import io

    import torch

    from mimocli.arch import MIMOUNet
    from mimocli.serve import build_app

    from .test_weights import Server

    torch.manual_seed(3)
    checkpoint = io.BytesIO()
    torch.save({"model": {f"module.{k}": v for k, v in MIMOUNet(8).state_dict().items()}}, checkpoint)
    host = Server(checkpoint.getvalue())
    monkeypatch.setenv("MIMO_GDRIVE_URL", host.url)
    cache = tmp_path / "elsewhere"
    app = build_app("base", device="cpu", outdir=tmp_path / "out", cache=cache)
    fn = {f.name: f.fn for f in app.fns.values()}
    try:
        fn["get_model"]("mimo-unet", lambda *a, **k: None)
    finally:
        host.close()
    assert (cache / "mimo-unet.safetensors").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from here on nothing may be fetched
    src = write_image(tmp_path / "street.png", photo(48, 64))
    _, dest = fn["run"](str(src), "mimo-unet", False, "same as the photo", 95, lambda *a, **k: None)
    assert read_image(dest).pixels.shape == (48, 64, 3)
