"""Fetching files: the authors' Google Drive files and files at a plain URL (both with gdown,
which follows Drive's pages and redirects and resumes a cut transfer), files on the Hugging Face
hub (with huggingface-hub), and a probe that tells at once when a host cannot be reached. Knows
nothing of MIMO-UNet; never prints."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import DownloadError, IntegrityError, OfflineError, WeightsError

CHUNK = 1 << 20
ByteProgress = Callable[[int, int | None], None]
GDRIVE_ENV = "MIMO_GDRIVE_URL"  # the Drive download endpoint; tests point it at 127.0.0.1
GDRIVE_URL = "https://drive.google.com"  # for messages: gdown builds the real request
TIMEOUT_S = 15  # seconds between bytes before an attempt is given up (pip waits 15 s too)
ATTEMPTS = 4  # a cut transfer is resumed with an HTTP Range request up to this many times
STALL_S = 30  # no byte for this long, attempts and waits included: the server hangs, stop
OFFLINE_HINT = "check the network connection (and a proxy, if one is needed), then run it again"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def hf_home(variable: str, folder: str) -> Path:
    # Read the environment now, not at import: huggingface_hub.constants freezes it at import.
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / folder


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- downloads --------------------------------------------------------------------------------
def gdrive_url(file_id: str) -> str | None:
    """Where a test server stands in for Drive ($MIMO_GDRIVE_URL), else None: gdown builds the URL."""
    base = os.environ.get(GDRIVE_ENV)
    return f"{base}?{urllib.parse.urlencode({'id': file_id, 'export': 'download'})}" if base else None


def download_gdrive(
    file_id: str,
    dest: Path,
    sha256: str | None = None,
    size: int | None = None,
    on_progress: ByteProgress | None = None,
) -> Path:
    """Download a Google Drive file to ``dest`` with gdown, which follows Drive's confirmation
    pages and cookies as they change; as download_url otherwise."""
    url = gdrive_url(file_id)
    shown = url or f"Google Drive file {file_id}"
    return _fetch(url, file_id, dest, shown, url or "https://drive.google.com/", sha256, size, None, on_progress)


def download_url(
    url: str,
    dest: Path,
    sha256: str | None = None,
    size: int | None = None,
    git_blob_sha1: str | None = None,
    on_progress: ByteProgress | None = None,
) -> Path:
    """Download ``url`` (https, redirects followed) to ``dest``; a cut transfer is resumed (an
    HTTP Range request, up to ATTEMPTS times, and on the next run from the partial file) and only a
    complete file is renamed to ``dest``. ``git_blob_sha1``: the file's id in a git repository
    (what `git hash-object` prints: SHA-1 of "blob SIZE\\0" and the bytes), for files published in
    one, whose sha256 nobody states.

    Raises OfflineError when the host cannot be reached, DownloadError when the server sends no
    file or the transfer keeps failing, IntegrityError when the size, sha256 or blob SHA-1 is not
    the expected one.
    """
    return _fetch(url, None, dest, url, url, sha256, size, git_blob_sha1, on_progress)


def git_blob_sha1(path: Path) -> str:
    """What `git hash-object PATH` prints: SHA-1 of b"blob <size>\\0" followed by the bytes."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)  # noqa: S324  (git's object id, not a secret)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch(
    url: str | None,
    file_id: str | None,
    dest: Path,
    shown: str,
    probe: str,
    sha256: str | None,
    size: int | None,
    blob_sha1: str | None,
    on_progress: ByteProgress | None,
) -> Path:
    import gdown
    import requests
    from gdown.exceptions import DownloadCancelled, FileURLRetrievalError
    from gdown.exceptions import DownloadError as GdownError

    dest.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()  # gdown would take a file already there as done, unchecked
    if why := unreachable(probe):
        raise OfflineError(why, OFFLINE_HINT)
    stalled = threading.Event()
    last = [time.monotonic()]

    def progress(done: int, total: int | None) -> None:
        last[0] = time.monotonic()
        if on_progress:
            on_progress(done, total)

    def watch() -> None:  # retries help a cut transfer, not a server that sends nothing
        while not finished.wait(1.0):
            if time.monotonic() - last[0] > STALL_S:
                stalled.set()
                return

    finished = threading.Event()
    threading.Thread(target=watch, daemon=True, name="mimo-download-watchdog").start()
    try:
        gdown.download(
            url=url,
            id=None if url else file_id,
            output=str(dest),
            quiet=True,
            resume=True,
            progress=progress,
            hasher=hasher,
            timeout=TIMEOUT_S,
            retries=ATTEMPTS - 1,
            cancel=stalled,
        )
    except DownloadCancelled as e:
        raise DownloadError(
            f"{shown}: the server sent nothing for {STALL_S} s",
            "try again later; the partial file is kept and the next run resumes it",
        ) from e
    except FileURLRetrievalError as e:
        raise DownloadError(
            f"{shown}: Google Drive sent a web page instead of the file ({_first_line(e)})",
            "try again later (Drive limits popular files), or download it in a browser and run "
            "`mimo weights import FILE --as VARIANT`",
        ) from e
    except requests.exceptions.ConnectionError as e:
        if _unreachable(e):
            host = urllib.parse.urlsplit(url or GDRIVE_URL).netloc
            raise OfflineError(f"cannot reach {host} ({_first_line(e)})", OFFLINE_HINT) from e
        raise DownloadError(f"{shown}: download failed ({_first_line(e)})", "run the command again to resume") from e
    except (GdownError, requests.exceptions.RequestException) as e:
        raise DownloadError(f"{shown}: download failed ({_first_line(e)})", "run the command again to resume") from e
    finally:
        finished.set()
    got = dest.stat().st_size
    with open(dest, "rb") as f:
        page = f.read(512).lstrip().lower().startswith((b"<!doctype html", b"<html"))
    if page:
        dest.unlink()
        raise DownloadError(
            f"{shown}: the server sent a web page instead of the file (quota exceeded, or no longer shared)",
            "try again later, or download it in a browser and run `mimo weights import FILE --as VARIANT`",
        )
    if size is not None and got != size:
        dest.unlink()
        raise IntegrityError(f"{shown}: downloaded {got:,} bytes, expected {size:,}", "run the command again")
    if sha256 is not None and (digest := hasher.hexdigest()) != sha256:
        dest.unlink()
        raise IntegrityError(
            f"{shown}: sha256 {digest[:12]}… is not the expected {sha256[:12]}…",
            "run the command again; if it persists the published file has changed",
        )
    if blob_sha1 is not None and (blob := git_blob_sha1(dest)) != blob_sha1:
        dest.unlink()
        raise IntegrityError(
            f"{shown}: git blob SHA-1 {blob[:12]}… is not the published {blob_sha1[:12]}…",
            "run the command again; if it persists the published file has changed",
        )
    return dest


def unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why ``url``'s host (or the proxy the environment names for it) cannot be reached, or None.

    One TCP connection, so that an offline machine fails at once instead of after the retries
    that downloaders spend on a flaky network."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {host}:{port} ({e.strerror or e})"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _unreachable(error: BaseException) -> bool:
    """A connection error that means no network or no host (as opposed to one cut midway)."""
    while error is not None:
        if isinstance(error, (socket.gaierror, ConnectionRefusedError)) or "Name or service" in str(error):
            return True
        if "Failed to resolve" in str(error) or "Connection refused" in str(error):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def parse_hf(ref: str) -> tuple[str, str, str | None]:
    """'hf://owner/repo/path/file[@revision]' -> (repo_id, filename, revision). Raises WeightsError."""
    body = ref.removeprefix("hf://")
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = body.split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"{ref!r} is not a hub reference", "write hf://owner/repo/file.safetensors[@revision]")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def hf_download(ref: str, cache: Path | None = None) -> Path:
    """Fetch an ``hf://`` file through huggingface-hub and check its sha256 against the hub's ETag.

    Raises OfflineError when offline and not cached, WeightsError/DownloadError otherwise.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, filename, revision = parse_hf(ref)
    local_only = offline()
    if not local_only:
        from huggingface_hub import constants

        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        if unreachable(endpoint):
            local_only = True  # the hub cache may hold it; else fail now, not after the hub's retries
    try:
        local = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache or hf_home("HF_HUB_CACHE", "hub"),  # the environment now, not at import
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=local_only,
            library_name="mimocli",
        )
    except LocalEntryNotFoundError as e:
        raise OfflineError(
            f"{ref}: not in the hub cache and the hub cannot be reached",
            "connect to the internet once, or set HF_ENDPOINT to a mirror you can reach",
        ) from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise WeightsError(f"{ref}: {str(e).splitlines()[0]}", "check the owner/repo, file name and revision") from e
    except HfHubHTTPError as e:
        raise DownloadError(
            f"{ref}: {str(e).splitlines()[0]}", "try again later; run `mimo env` to see the hub in use"
        ) from e
    path = Path(local)
    blob = path.resolve()
    if _HEX64.match(blob.name) and sha256_file(blob) != blob.name:
        raise IntegrityError(f"{path}: its sha256 does not match the hub's", f"delete {blob} and download it again")
    return path
