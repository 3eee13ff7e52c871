"""`mimo serve` in a real browser: headless Chromium (Debian's) driven by Playwright loads the page,
uploads a photo, waits for the result, downloads it and takes a screenshot."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

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
    dropdowns = [b for b in app.blocks.values() if type(b).__name__ == "Dropdown"]
    assert [d.value for d in dropdowns] == ["mimo-unet-lite"]


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
    port = _free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env["TMPDIR"] = str(tmp)
    cmd = [sys.executable, "-m", "mimocli", "serve", "-w", tiny_weights, "-d", "cpu", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--max-upload-mb", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(url, proc)
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
        busy = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and f"--port {port + 1}" in busy.stderr
        left = [p.name for p in tmp.iterdir()]
        assert len(left) == 1 and left[0].startswith("mimo-serve-"), left  # one private folder for everything
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert list(tmp.iterdir()) == []  # uploads and results went with it


def test_the_page_keeps_alpha_and_16_bits_as_mimo_deblur_does(tmp_path, tiny_weights):
    """The uploaded file reaches the photo job as it came: a 16-bit RGBA PNG comes back 16-bit
    RGBA (Gradio's default would have made it 8-bit RGB first)."""
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    deep = np.dstack([photo(48, 64, dtype=np.uint16), np.full((48, 64), 40000, np.uint16)])
    src = write_image(tmp_path / "deep.png", deep)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    cmd = [sys.executable, "-m", "mimocli", "serve", "-w", tiny_weights, "-d", "cpu", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(url, proc)
        client = Client(url, verbose=False, download_files=str(tmp_path / "got"))
        _slider, result = client.predict(handle_file(str(src)), "mimo-unet-lite", False, api_name="/run")
        pixels = read_image(result).pixels
        assert pixels.dtype == np.uint16 and pixels.shape == (48, 64, 4)
        assert np.array_equal(pixels[:, :, 3], deep[:, :, 3])  # the alpha plane untouched
        frames = [Image.fromarray(photo(32, 32, seed=i)) for i in range(3)]
        frames[0].save(tmp_path / "holiday.gif", save_all=True, append_images=frames[1:])
        with pytest.raises(Exception) as e:  # the page's error, as the client receives it
            client.predict(handle_file(str(tmp_path / "holiday.gif")), "mimo-unet-lite", False, api_name="/run")
        said = str(e.value)
        assert "holiday.gif: an animation of 3 frames" in said and "mimo-serve-" not in said  # no server path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert "Traceback" not in stderr  # an error shown in the page is no traceback in the terminal
