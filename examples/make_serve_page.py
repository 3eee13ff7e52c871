"""Make the README's picture of `mimo serve` with mimocli itself.

    python examples/make_serve_page.py   # writes examples/serve_page.png

Starts `mimo serve --variant lite` on a free port, opens the page in headless Chromium (Debian's
`chromium`, driven by Playwright), drops examples/scene_shaken.jpg in, presses Deblur and, once
the result is there, photographs the page.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "mimocli", "serve", "--variant", "lite", "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url, wait_until="networkidle")
            page.locator("#photo input[type=file]").set_input_files(str(HERE / "scene_shaken.jpg"))
            page.locator("#photo img").first.wait_for(timeout=30_000)
            page.locator("#deblur").click()
            expect(page.locator("#download a").first).to_be_visible(timeout=300_000)
            page.wait_for_timeout(1000)  # the slider's images drawn
            page.screenshot(path=str(HERE / "serve_page.png"), full_page=True)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)


if __name__ == "__main__":
    main()
