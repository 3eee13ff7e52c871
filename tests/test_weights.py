from __future__ import annotations

import hashlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import save_file

from mimocli.arch import MIMOUNet
from mimocli.downloads import download_gdrive, parse_hf, unreachable
from mimocli.errors import DownloadError, IntegrityError, OfflineError, WeightsError
from mimocli.weights import (
    cache_dir,
    download_weights,
    import_weights,
    load_model,
    read_state_dict,
    resolve_weights,
    verify_cached,
)

from .conftest import digest


@pytest.fixture(scope="module")
def authors_pickle(tmp_path_factory) -> bytes:
    """A checkpoint shaped like the authors' MIMO-UNet.pkl: {'model': sd, 'epoch': n}, legacy format."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "MIMO-UNet.pkl"
    sd = {f"module.{k}": v for k, v in MIMOUNet(8).state_dict().items()}
    torch.save({"model": sd, "epoch": 3000}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


class Server:
    """A file host on 127.0.0.1 in Drive's place (gdown's plain-URL path: Drive's own pages are
    gdown's to follow), with Range support and faults: a cut transfer, corrupt bytes, a quota page."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.cut_first = False
        self.corrupt = False
        self.page_only = False
        self.delay = 0.0  # seconds before each file body, so that clients overlap
        self.hang = threading.Event()  # set: the server accepts and then never answers
        self.released = threading.Event()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                server.requests.append((self.path, self.headers.get("Range")))
                if server.hang.is_set():
                    server.released.wait(60)
                    return
                if server.page_only or not q.get("id"):
                    page = b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                data = server.payload
                if server.corrupt:
                    data = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                time.sleep(server.delay)
                body = data[start:]
                if server.cut_first and not rng:
                    server.cut_first = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/download"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def drive(authors_pickle, monkeypatch) -> Iterator[Server]:
    server = Server(authors_pickle)
    monkeypatch.setenv("MIMO_GDRIVE_URL", server.url)
    yield server
    server.close()


def test_download_then_cached(drive, tmp_path):
    path = download_weights("base")
    assert path == cache_dir() / "mimo-unet.safetensors"
    assert path.parent == tmp_path / "home" / "hf" / "assets" / "mimocli" / "default" / "weights"
    record = verify_cached(path)
    assert record["source"] == "gdrive://1EQJoQj3YMLFfzrbgzWMD3Xj96RqLdIlx"
    assert record["source_sha256"] == hashlib.sha256(drive.payload).hexdigest()
    assert any("id=1EQJoQj3YMLFfzrbgzWMD3Xj96RqLdIlx" in p for p, _ in drive.requests)
    assert not (cache_dir() / "downloads" / "MIMO-UNet.pkl").exists()  # converted, pickle removed
    n = len(drive.requests)
    model = load_model("mimo-unet", "cpu")
    assert len(drive.requests) == n  # second use: the cache, no network
    assert model.num_res == 8 and not model.training


def test_cut_transfer_is_resumed_with_range(drive):
    drive.cut_first = True
    path = download_weights("mimo-unet")
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for _, r in drive.requests)
    assert read_state_dict(path).keys() == MIMOUNet(8).state_dict().keys()


def test_corrupt_download_is_refused_and_nothing_cached(drive):
    drive.corrupt = True
    with pytest.raises(WeightsError, match="refused: not a readable torch checkpoint"):
        download_weights("mimo-unet")
    assert not (cache_dir() / "mimo-unet.safetensors").exists()


def test_expected_sha256_mismatch(drive, tmp_path):
    dest = tmp_path / "f.pkl"
    with pytest.raises(IntegrityError, match="sha256"):
        download_gdrive("x", dest, sha256="0" * 64)
    assert sorted(tmp_path.iterdir()) == []  # nothing kept: neither the file nor a partial one
    good = hashlib.sha256(drive.payload).hexdigest()
    assert download_gdrive("x", dest, sha256=good, size=len(drive.payload)).read_bytes() == drive.payload
    seen: list[int] = []
    download_gdrive("x", dest, sha256=good, on_progress=lambda done, total: seen.append(done))
    assert seen and seen[-1] == len(drive.payload)  # progress reaches the bar


def test_a_hung_server_is_given_up_when_nothing_arrives_for_a_while(drive, tmp_path, monkeypatch):
    """A server that takes the connection and never answers: the download stops once nothing has
    arrived for STALL_S (retries resume a cut transfer, they do not wait on a silent server),
    with one line that says so; a transfer that keeps moving is not stopped by it."""
    from mimocli import downloads

    monkeypatch.setattr(downloads, "TIMEOUT_S", 1)
    monkeypatch.setattr(downloads, "STALL_S", 3)
    drive.hang.set()
    started = time.monotonic()
    with pytest.raises(DownloadError, match="the server sent nothing for 3 s") as e:
        download_gdrive("x", tmp_path / "f.pkl")
    took = time.monotonic() - started
    assert took < 10, took  # 4 attempts of 1 s each and their waits would pass the 3 s mark; 30 s before
    assert "try again later" in (e.value.hint or "") and len(drive.requests) >= 1
    drive.hang.clear()
    drive.delay = 0.5  # under the 1 s read timeout: slow, not stalled
    drive.cut_first = True  # cut, resumed: bytes keep arriving, so nothing is stalled
    assert download_gdrive("x", tmp_path / "f.pkl").read_bytes() == drive.payload


def test_quota_page_is_a_clear_error(drive):
    drive.page_only = True
    with pytest.raises(DownloadError, match="web page instead of the file"):
        download_weights("mimo-unet")


def test_tampered_cache_is_an_error_not_reused(drive):
    path = download_weights("mimo-unet")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the recorded"):
        resolve_weights("mimo-unet")
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(IntegrityError, match="size"):
        load_model("mimo-unet")
    assert download_weights("mimo-unet", force=True) == path
    verify_cached(path)


@pytest.fixture
def authors_site(monkeypatch, tmp_path_factory) -> Iterator[Server]:
    """The XYDeblur authors' file as a plain https URL would serve it (here http on 127.0.0.1): a
    pickle {'model': sd} under its git blob SHA-1, registered in place of the GitHub URL."""
    import dataclasses

    from mimocli import registry
    from mimocli.downloads import git_blob_sha1
    from mimocli.xydeblur import XYDeblur

    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("xy") / "pretrained_model.pkl"
    torch.save({"model": XYDeblur().state_dict()}, path)  # the published shape: 6 blocks of 32 channels
    server = Server(path.read_bytes())
    entry = registry.load_registry()["xydeblur"]
    assert entry.sources[0].startswith("https://github.com/Seowon-Ji/XYDeblur/raw/")
    local = dataclasses.replace(entry, sources=(server.url + "?id=xydeblur",), git_blob_sha1=git_blob_sha1(path))
    monkeypatch.setitem(registry._entries(), "xydeblur", local)
    yield server
    server.close()


def test_the_authors_url_is_downloaded_checked_by_its_git_blob_id_and_cached(authors_site):
    from mimocli.xydeblur import XYDeblur

    path = download_weights("xydeblur")
    record = verify_cached(path)
    assert record["source"].endswith("?id=xydeblur") and record["architecture"] == "xydeblur"
    assert record["source_sha256"] == hashlib.sha256(authors_site.payload).hexdigest()
    assert not (cache_dir() / "downloads" / "XYDeblur.pkl").exists()
    n = len(authors_site.requests)
    model = load_model("xy", "cpu")
    assert isinstance(model, XYDeblur) and len(authors_site.requests) == n  # cached: no network


def test_a_wrong_git_blob_id_is_refused_and_nothing_kept(authors_site, monkeypatch):
    import dataclasses

    from mimocli import registry

    entry = registry._entries()["xydeblur"]
    monkeypatch.setitem(registry._entries(), "xydeblur", dataclasses.replace(entry, git_blob_sha1="0" * 40))
    with pytest.raises(IntegrityError, match="git blob SHA-1 .* is not the published 000000000000"):
        download_weights("xydeblur")
    assert not (cache_dir() / "xydeblur.safetensors").exists()
    assert not any((cache_dir() / "downloads").glob("*"))


def test_a_cut_transfer_from_the_authors_url_is_resumed(authors_site):
    authors_site.cut_first = True
    path = download_weights("xydeblur")
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for _, r in authors_site.requests)
    assert verify_cached(path)["source_sha256"] == hashlib.sha256(authors_site.payload).hexdigest()


def test_the_authors_url_offline_or_unreachable_says_how(authors_site, monkeypatch):
    import dataclasses

    from mimocli import registry

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="mimo weights download xydeblur"):
        resolve_weights("xydeblur")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    entry = registry._entries()["xydeblur"]
    gone = dataclasses.replace(entry, sources=("http://127.0.0.1:9/XYDeblur.pkl",))  # nothing listens on port 9
    monkeypatch.setitem(registry._entries(), "xydeblur", gone)
    with pytest.raises(OfflineError, match="could not download weights for xydeblur.*cannot reach 127.0.0.1:9"):
        resolve_weights("xydeblur")


def test_git_blob_id_is_what_git_hash_object_prints(tmp_path):
    import shutil
    import subprocess

    from mimocli.downloads import git_blob_sha1

    f = tmp_path / "f.bin"
    f.write_bytes(b"hello\n")
    assert git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git's own example
    if shutil.which("git"):
        f.write_bytes(bytes(range(256)) * 1000)
        done = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
        assert git_blob_sha1(f) == done.stdout.strip()


def test_a_folder_given_as_weights_is_named_as_such(tmp_path, tiny_weights):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(tiny_weights.read_bytes())
    with pytest.raises(WeightsError, match=r"is a folder, not a weights file \(it holds model.safetensors\)"):
        read_state_dict(folder)


def test_offline_without_cache_says_how(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="mimo weights download mimo-unet-plus.*--weights PATH"):
        resolve_weights("plus")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("MIMO_GDRIVE_URL", "http://127.0.0.1:9/download")  # nothing listens on port 9
    with pytest.raises(OfflineError, match="could not download weights for mimo-unet-plus"):
        resolve_weights("plus")


def test_import_zip_and_legacy_pickles_converted_once(authors_pickle, tmp_path):
    legacy = tmp_path / "MIMO-UNet.pkl"
    legacy.write_bytes(authors_pickle)
    path, variant = import_weights(legacy, "base")
    assert variant.name == "mimo-unet" and path.name == "mimo-unet.safetensors"
    mtime = path.stat().st_mtime_ns
    assert import_weights(legacy, "base")[0].stat().st_mtime_ns == mtime  # converted once
    apart, _ = import_weights(legacy)  # without a slot named: apart, by content
    assert apart.parent.name == "imported" and apart.name.startswith("MIMO-UNet-")
    assert import_weights(legacy)[0].stat().st_mtime_ns == apart.stat().st_mtime_ns
    zipped = tmp_path / "plus.pth"
    torch.save({"model": MIMOUNet(20).state_dict()}, zipped)
    path, variant = import_weights(zipped, "realblur")
    assert path.name == "mimo-unet-plus-realblur.safetensors" and variant.num_res == 20
    with pytest.raises(WeightsError, match="not mimo-unet"):
        import_weights(zipped, "base")


def test_unsafe_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pkl"
    torch.save({"model": {"x": torch.zeros(1)}, "run": print}, evil)
    with pytest.raises(WeightsError, match=r"evil.pkl: refused: it holds code to run \((builtins\.)?print\)") as e:
        read_state_dict(evil)
    assert "weights_only" not in str(e.value) and "trusted source" not in str(e.value)
    with pytest.raises(WeightsError, match="no such weights file"):
        read_state_dict(tmp_path / "none.pkl")


def test_parse_hf():
    assert parse_hf("hf://me/repo/dir/w.safetensors@v1") == ("me/repo", "dir/w.safetensors", "v1")
    assert parse_hf("hf://me/repo/w.pkl") == ("me/repo", "w.pkl", None)
    with pytest.raises(WeightsError, match="not a hub reference"):
        parse_hf("hf://me/w.pkl")


class Hub:
    """Answers huggingface-hub's HEAD/GET on /{repo}/resolve/{revision}/{file} on 127.0.0.1."""

    COMMIT = "a" * 40

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, body: bool) -> None:
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                name = "/".join(parts[:2]) + ":" + "/".join(parts[4:])
                data = hub.files.get(name)
                if len(parts) < 5 or parts[2] != "resolve" or data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._serve(False)

            def do_GET(self):
                self._serve(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_hub_download_through_huggingface_hub(tmp_path, monkeypatch, tiny_weights):
    hub = Hub({"me/mimo:tiny.safetensors": tiny_weights.read_bytes()})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        path = resolve_weights("base", "hf://me/mimo/tiny.safetensors")
        assert digest(path) == digest(tiny_weights)
        assert str(tmp_path / "home" / "hf") in str(path)
        assert load_model("base", weights="hf://me/mimo/tiny.safetensors").num_res == 1  # weights decide
        with pytest.raises(WeightsError):
            resolve_weights("base", "hf://me/mimo/missing.safetensors")
    finally:
        hub.httpd.shutdown()
        hub.httpd.server_close()
    # The hub gone (nothing listens any more): the cached file is used at once, a missing one
    # fails at once, not after huggingface-hub's retries (about 25 s).
    started = time.monotonic()
    assert resolve_weights("base", "hf://me/mimo/tiny.safetensors") == path
    with pytest.raises(OfflineError, match="not in the hub cache and the hub cannot be reached"):
        resolve_weights("base", "hf://me/mimo/other.safetensors")
    assert time.monotonic() - started < 10
    blob = path.resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="sha256 does not match the hub"):
        resolve_weights("base", "hf://me/mimo/tiny.safetensors")


def test_unreachable_names_the_host_or_the_proxy(monkeypatch):
    assert unreachable("http://127.0.0.1:9/x") == "cannot reach 127.0.0.1:9 (Connection refused)"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert unreachable(f"http://127.0.0.1:{port}/x") is None
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("no_proxy", "")
        assert unreachable("https://drive.google.com/") is None  # through the proxy, which is up
        monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
        assert "127.0.0.1:9" in str(unreachable("https://drive.google.com/"))


def test_local_safetensors_used_as_is(tiny_weights):
    assert resolve_weights("plus", tiny_weights) == tiny_weights
    bad = tiny_weights.with_name("bad.safetensors")
    save_file({"conv.weight": torch.zeros(2)}, bad)
    with pytest.raises(WeightsError, match="not a MIMO-UNet"):
        load_model(weights=bad)


def test_cache_location_default_env_and_flag(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "home" / "hf" / "assets" / "mimocli" / "default" / "weights"
    monkeypatch.setenv("HF_ASSETS_CACHE", str(tmp_path / "assets"))
    assert cache_dir() == tmp_path / "assets" / "mimocli" / "default" / "weights"
    monkeypatch.setenv("MIMO_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_import_to_cache_dir_then_deblur_offline(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mimocli.cli import app
    from mimocli.images import write_image

    from .conftest import photo

    ckpt = tmp_path / "MIMO-UNet.pkl"
    torch.save({"model": MIMOUNet(8).state_dict(), "epoch": 1}, ckpt)
    cache = tmp_path / "c"
    runner = CliRunner()
    args = ["weights", "import", str(ckpt), "--cache-dir", str(cache), "--as", "base"]
    assert runner.invoke(app, args).exit_code == 0
    assert (cache / "mimo-unet.safetensors").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached weights need no network
    write_image(tmp_path / "p.png", photo(32, 32))
    r = runner.invoke(app, ["deblur", str(tmp_path / "p.png"), "-m", "base", "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output


# -- the bundled model ---------------------------------------------------------------------------
def _lite_entry():
    from mimocli.weights import load_registry

    return load_registry()["mimo-unet-lite"]


def test_bundled_lite_loads_offline_and_is_pinned(monkeypatch):
    from mimocli.registry import get_variant
    from mimocli.weights import load_weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = _lite_entry()
    assert entry.bundled is not None and entry.bundled.parent.name == "bundled"
    loaded = load_weights("lite")
    v = get_variant("lite")
    assert (loaded.model.num_res, loaded.model.base_channel) == (v.num_res, v.base_channel)
    assert (
        loaded.path == entry.bundled
        and loaded.sha256 == entry.sha256 == hashlib.sha256(entry.bundled.read_bytes()).hexdigest()
    )
    assert loaded.path.stat().st_size == entry.size < 8_000_000
    assert not any(cache_dir().glob("*"))  # nothing copied into the cache, nothing downloaded

    from .test_cli import run

    r = run("weights", "list", "--json")
    rows = {x["name"]: x for x in __import__("json").loads(r.stdout)}
    assert rows["mimo-unet-lite"]["bundled"] and rows["mimo-unet-lite"]["cached"]
    assert not rows["mimo-unet-plus"]["bundled"]
    assert download_weights("mimo-unet-lite") == entry.bundled  # nothing to fetch


def test_altered_bundled_weights_are_refused(monkeypatch, tmp_path):
    from mimocli import weights as w

    entry = _lite_entry()
    copy = tmp_path / "lite.safetensors"
    blob = bytearray(entry.bundled.read_bytes())
    blob[-100] ^= 0xFF
    copy.write_bytes(bytes(blob))
    monkeypatch.setattr(w.WeightsEntry, "bundled", property(lambda self: copy if self.key == entry.key else None))
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        w.load_weights("lite")
    copy.unlink()
    with pytest.raises(IntegrityError, match="missing from this installation"):
        w.load_weights("lite")


def _with_fallback(monkeypatch, on: bool) -> None:
    import dataclasses

    from mimocli import weights as w

    real = w.load_registry

    def patched():
        return {k: dataclasses.replace(e, fallback=on and e.bundled is not None) for k, e in real().items()}

    monkeypatch.setattr(w, "load_registry", patched)


@pytest.mark.parametrize("fallback", [False, True])
def test_default_variant_offline_falls_back_to_bundled_only_when_marked(monkeypatch, tmp_path, fallback):
    import json

    from mimocli.images import read_image, write_image

    from .conftest import photo
    from .test_cli import flat, run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _with_fallback(monkeypatch, fallback)
    write_image(tmp_path / "a.png", photo(40, 52))
    r = run("deblur", tmp_path / "a.png", "--json")
    if not fallback:
        assert r.exit_code == 1 and "--variant lite" in flat(r.stderr)
        assert not (tmp_path / "a_deblurred.png").exists()
        return
    assert r.exit_code == 0, r.output
    warning = [line for line in r.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "mimo-unet-plus" in warning[0] and "mimo weights download" in warning[0]
    record = json.loads(r.stdout)
    assert record["weights"]["name"] == "mimo-unet-lite" and record["weights"]["sha256"] == _lite_entry().sha256
    assert read_image(tmp_path / "a_deblurred.png").pixels.shape == (40, 52, 3)
    # an explicit variant never falls back: asking for plus offline is an error
    r = run("deblur", tmp_path / "a.png", "--variant", "plus", "--overwrite")
    assert r.exit_code == 1


def test_three_downloads_at_once_share_one_transfer(drive, tmp_path):
    """Three `mimo weights download base` started together on an empty cache: one downloads
    while the others wait on its lock, then find the file done."""
    import os
    import subprocess
    import sys

    drive.delay = 1.0
    env = {**os.environ, "MIMO_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mimocli", "weights", "download", "base", "--quiet"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == str(tmp_path / "cache" / "mimo-unet.safetensors") and "Traceback" not in err
    assert len(drive.requests) == 1  # one transfer
    verify_cached(tmp_path / "cache" / "mimo-unet.safetensors")


def test_old_cache_in_the_hub_folder_is_moved_once_and_hf_cache_stays_clean(tmp_path, tiny_weights):
    from huggingface_hub import scan_cache_dir

    old = tmp_path / "home" / "hf" / "hub" / "mimocli"
    path, _ = import_weights(tiny_weights, cache=old)
    assert path.parent.parent == old
    new = cache_dir()
    assert not old.exists()
    moved = new / "imported" / path.name
    assert moved.exists() and verify_cached(moved)["source_sha256"]
    hub = scan_cache_dir(tmp_path / "home" / "hf" / "hub")
    assert not hub.warnings, hub.warnings  # `hf cache ls` sees nothing it does not understand


def test_a_weights_file_is_named_by_what_it_holds(tmp_path, monkeypatch):
    """--weights FILE without --variant: the records name the file's own architecture (not the
    default MIMO-UNet+), and outputs label the model by the file's name."""
    import json

    from mimocli.images import write_image
    from mimocli.weights import load_weights

    from .conftest import photo
    from .test_cli import run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundled = _lite_entry().bundled
    assert bundled is not None
    loaded = load_weights(None, "cpu", str(bundled), tmp_path / "cache")
    assert loaded.variant.name == "mimo-unet-lite" and loaded.label == bundled.name
    assert load_weights("lite", "cpu").label == "mimo-unet-lite"
    assert load_weights("plusplus", "cpu", str(bundled), tmp_path / "cache").variant.ensemble  # asked for: kept
    odd = tmp_path / "odd.safetensors"
    save_file(MIMOUNet(num_res=2, base_channel=8).state_dict(), str(odd))
    loaded = load_weights(None, "cpu", str(odd), tmp_path / "cache")
    assert loaded.variant.name == "mimo-unet-r2c8" and (loaded.model.num_res, loaded.model.base_channel) == (2, 8)
    write_image(tmp_path / "a.png", photo(40, 52))
    r = run("deblur", tmp_path / "a.png", "--weights", odd, "--json", "--compare", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["weights"]["variant"] == "mimo-unet-r2c8"
