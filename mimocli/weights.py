"""Weights: resolve -> download -> verify -> convert -> load. Never prints.

Sources, in order: an explicit local file (safetensors, or the authors' torch pickle), an
``hf://owner/repo/file[@revision]`` reference through huggingface-hub, then the registry's
sources (the authors' Google Drive files, or ``bundled://FILE``: a file shipped inside the
package, checked against the sha256 the registry pins and never copied or downloaded). Foreign pickles are read with
``torch.load(weights_only=True)`` only and converted once to safetensors in the cache, where
their size and sha256 are recorded; every later load is checked against that record.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .arch import MIMOUNet
from .atomic import write_bytes_atomic
from .errors import DownloadError, IntegrityError, OfflineError, WeightsError
from .registry import BUNDLED_VARIANT, DEFAULT_VARIANT, Variant, detect_variant, get_variant, table

ByteProgress = Callable[[int, int | None], None]

CACHE_ENV = "MIMO_CACHE_DIR"
GDRIVE_ENV = "MIMO_GDRIVE_URL"  # the Drive download endpoint; tests point it at 127.0.0.1
GDRIVE_URL = "https://drive.google.com"  # for messages: gdown builds the real request
PICKLE_SUFFIXES = (".pkl", ".pth", ".pt", ".ckpt", ".bin")
TIMEOUT_S = 30
ATTEMPTS = 4  # a cut transfer is resumed with an HTTP Range request up to this many times
CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
BUNDLED = "bundled://"
IMPORTED = "imported"  # the cache folder for files imported without --as


# -- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsEntry:
    key: str
    description: str
    architecture: str
    sources: tuple[str, ...]
    filename: str
    size: int | None = None
    sha256: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    provenance: str = ""
    license: str = ""
    fallback: bool = False  # bundled weights good enough to stand in when the default cannot be had

    @property
    def bundled(self) -> Path | None:
        """The shipped file for a ``bundled://`` entry, else None."""
        for source in self.sources:
            if source.startswith(BUNDLED):
                return Path(__file__).resolve().parent / "bundled" / source.removeprefix(BUNDLED)
        return None


@functools.cache
def _entries() -> dict[str, WeightsEntry]:
    return {
        key: WeightsEntry(
            key=key,
            description=e["description"],
            architecture=key,
            sources=tuple(e["sources"]),
            filename=e["filename"],
            size=e.get("size"),
            sha256=e.get("sha256"),
            metrics=e.get("metrics", {}),
            provenance=e.get("provenance", ""),
            license=e.get("license", ""),
            fallback=bool(e.get("fallback", False)),
        )
        for key, e in table().items()
        if "sources" in e
    }


def load_registry() -> dict[str, WeightsEntry]:
    """The variants that have weights of their own, by key (the registry is read once)."""
    return dict(_entries())


def registry_entry(key: str) -> WeightsEntry:
    entries = load_registry()
    if key not in entries:
        raise WeightsError(f"no pretrained weights are registered for {key!r}", f"known: {', '.join(entries)}")
    return entries[key]


# -- cache ------------------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else $MIMO_CACHE_DIR, else the Hugging Face assets folder that the hub sets
    aside for a library's own files (``huggingface_hub.cached_assets_path``:
    <HF_HOME>/assets/mimocli/default/weights). A cache that an older mimocli kept inside the hub's
    model cache, where `hf cache` took it for a broken repository, is moved there once."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from huggingface_hub import cached_assets_path

    assets = _hf_home("HF_ASSETS_CACHE", "assets")
    try:
        root = cached_assets_path("mimocli", subfolder="weights", assets_dir=assets)  # creates it
    except OSError:  # a read-only home: reading what is there still works
        return assets / "mimocli" / "default" / "weights"
    _move_old_cache(_hf_home("HF_HUB_CACHE", "hub") / "mimocli", root)
    return root


def _hf_home(variable: str, folder: str) -> Path:
    # Read the environment now, not at import: huggingface_hub.constants freezes it at import.
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / folder


def _move_old_cache(old: Path, new: Path) -> None:
    """Move what an older mimocli cached in ``old`` into ``new`` (never over a file already
    there), then remove ``old`` if it is left empty."""
    if not old.is_dir():
        return
    for item in old.iterdir():
        target = new / item.name
        if not target.exists():
            with contextlib.suppress(OSError):
                shutil.move(item, target)
    with contextlib.suppress(OSError):
        old.rmdir()


def cached_weights(key: str, cache: Path) -> Path:
    return cache / f"{key}.safetensors"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_bundled(entry: WeightsEntry) -> Path:
    """The shipped weights file of ``entry``, checked against the size and sha256 the registry pins.

    Raises IntegrityError when the file is missing or altered (a broken installation).
    """
    path = entry.bundled
    assert path is not None, entry.key
    fix = "reinstall mimocli (pip install --force-reinstall mimocli), or pass --weights PATH"
    if not path.is_file():
        raise IntegrityError(f"{path}: the bundled {entry.key} weights are missing from this installation", fix)
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise IntegrityError(f"{path}: size {size:,} bytes, but the registry pins {entry.size:,}", fix)
    if entry.sha256 and sha256_file(path) != entry.sha256:
        raise IntegrityError(f"{path}: its sha256 does not match the one the registry pins", fix)
    return path


def verify_cached(path: Path) -> dict[str, Any]:
    """Check ``path`` against the size and sha256 recorded when it was made.

    Raises IntegrityError naming the file and the fix when they differ or the record is gone.
    """
    record_file = _record_path(path)
    fix = f"delete {path} and fetch it again (mimo weights download --force), or pass --weights PATH"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{path}: its integrity record {record_file.name} is missing or unreadable", fix) from e
    size = path.stat().st_size
    if size != record.get("size"):
        raise IntegrityError(f"{path}: size {size:,} bytes, but {record.get('size'):,} were recorded", fix)
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise IntegrityError(
            f"{path}: sha256 {digest[:12]}… does not match the recorded {str(record.get('sha256'))[:12]}…", fix
        )
    return dict(record)


def _write_record(path: Path, **info: Any) -> None:
    record = {
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **info,
    }
    write_bytes_atomic(_record_path(path), (json.dumps(record, indent=1) + "\n").encode())


# -- reading state dicts ----------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A MIMO-UNet state dict from safetensors or a torch pickle (zip or legacy format).

    Pickles are read with ``weights_only=True`` and never otherwise; ``{'model': sd}`` wrappers
    and ``module.`` prefixes are removed. Raises WeightsError when the file holds no state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file", "check the path given to --weights")
    if p.suffix == ".safetensors":
        try:
            sd = load_file(p)
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{p}: not a readable safetensors file ({e})") from e
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors come in many types; all mean the same to a user
            raise WeightsError(
                f"{p}: refused: {_pickle_problem(e)}", "pass a MIMO-UNet checkpoint or a .safetensors file"
            ) from e
        sd = _unwrap(obj, p)
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _pickle_problem(error: Exception) -> str:
    """What is wrong with a pickle, in a few words: the object it tried to build, if that is
    why (never PyTorch's advice to load it unsafely), else the first line of the error."""
    text = str(error)
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds code to run ({found.group(1)}), not only tensors"
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "weights_only" not in line and not line.startswith(("Weights only", "Check the doc"))
    ]
    return f"not a readable torch checkpoint ({lines[0] if lines else type(error).__name__})"


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "params_ema", "params"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors", "pass a MIMO-UNet checkpoint")
    return {str(k): v for k, v in obj.items()}


def build_model(state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> tuple[MIMOUNet, Variant]:
    """A float32 MIMOUNet loaded strictly from ``state_dict``. Raises WeightsError on a mismatch."""
    try:
        variant = detect_variant(state_dict)
    except WeightsError as e:
        raise WeightsError(f"{source}: {e.message}", e.hint) from None
    damaged = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if damaged:
        raise WeightsError(
            f"{source}: {len(damaged)} of {len(state_dict)} tensors hold NaN/Inf values ({damaged[0]}, ...)",
            "the file is damaged: download or export it again",
        )
    model = MIMOUNet(variant.num_res, variant.base_channel)
    try:
        model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise WeightsError(f"{source}: does not fit MIMO-UNet with {variant.num_res} blocks ({detail})") from e
    return model.eval(), variant


def convert(state_dict: Mapping[str, torch.Tensor], variant: Variant, dest: Path, **info: Any) -> Path:
    """Write a state dict that ``build_model`` accepted as safetensors to ``dest``, atomically,
    and record its size and sha256 beside it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    meta = {
        "format": "pt",
        "architecture": "MIMOUNet",
        "num_res": str(variant.num_res),
        "base_channel": str(variant.base_channel),
    }
    write_bytes_atomic(dest, save(tensors, metadata=meta))
    _write_record(dest, num_res=variant.num_res, base_channel=variant.base_channel, **info)
    return dest


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
    pages and cookies as they change; a cut transfer is resumed (gdown's partial file, HTTP
    Range) and only a complete file is renamed to ``dest``.

    Raises OfflineError when the host cannot be reached, DownloadError when Drive sends no file
    or the transfer keeps failing, IntegrityError when the size or sha256 is not the expected one.
    """
    import gdown
    import requests
    from gdown.exceptions import DownloadError as GdownError
    from gdown.exceptions import FileURLRetrievalError

    dest.parent.mkdir(parents=True, exist_ok=True)
    url = gdrive_url(file_id)
    shown = url or f"Google Drive file {file_id}"
    hasher = hashlib.sha256()
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()  # gdown would take a file already there as done, unchecked
    if why := unreachable(url or "https://drive.google.com/"):
        raise OfflineError(why)
    try:
        gdown.download(
            url=url,
            id=None if url else file_id,
            output=str(dest),
            quiet=True,
            resume=True,
            progress=on_progress,
            hasher=hasher,
            timeout=TIMEOUT_S,
            retries=ATTEMPTS - 1,
        )
    except FileURLRetrievalError as e:
        raise DownloadError(
            f"{shown}: Google Drive sent a web page instead of the file ({_first_line(e)})",
            "try again later (Drive limits popular files), or download it in a browser and run "
            "`mimo weights import FILE --as VARIANT`",
        ) from e
    except requests.exceptions.ConnectionError as e:
        if _unreachable(e):
            host = urllib.parse.urlsplit(url or GDRIVE_URL).netloc
            raise OfflineError(f"cannot reach {host} ({_first_line(e)})") from e
        raise DownloadError(f"{shown}: download failed ({_first_line(e)})", "run the command again to resume") from e
    except (GdownError, requests.exceptions.RequestException) as e:
        raise DownloadError(f"{shown}: download failed ({_first_line(e)})", "run the command again to resume") from e
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
            cache_dir=cache or _hf_home("HF_HUB_CACHE", "hub"),  # the environment now, not at import
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=local_only,
            library_name="mimocli",
        )
    except LocalEntryNotFoundError as e:
        raise OfflineError(f"{ref}: not in the hub cache and the hub cannot be reached") from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise WeightsError(f"{ref}: {str(e).splitlines()[0]}", "check the owner/repo, file name and revision") from e
    except HfHubHTTPError as e:
        raise DownloadError(f"{ref}: {str(e).splitlines()[0]}") from e
    path = Path(local)
    blob = path.resolve()
    if _HEX64.match(blob.name) and sha256_file(blob) != blob.name:
        raise IntegrityError(f"{path}: its sha256 does not match the hub's", f"delete {blob} and download it again")
    return path


# -- resolution -------------------------------------------------------------------------------
def resolve_weights(
    variant: Variant | str,
    weights: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> Path:
    """The safetensors (or, for local files, original) path to load for ``variant``.

    Raises WeightsError (or a subclass) with the fix when none can be had.
    """
    v = get_variant(variant) if isinstance(variant, str) else variant
    if weights is not None:  # a file of the user's: the cache folder is not even made
        ref = str(weights)
        if ref.startswith("hf://"):
            got = hf_download(ref, Path(cache) if cache else None)
            return got if got.suffix == ".safetensors" else import_weights(got, cache=cache_dir(cache))[0]
        return Path(ref).expanduser()
    key = v.weights_key
    entry = load_registry().get(key)
    if entry is not None and entry.bundled is not None:
        return verify_bundled(entry)
    root = cache_dir(cache)
    path = cached_weights(key, root)
    if path.exists():
        verify_cached(path)
        return path
    return download_weights(key, cache=root, on_progress=on_progress)


def download_weights(
    key: str,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    on_progress: ByteProgress | None = None,
) -> Path:
    """Fetch the registered weights ``key`` from its sources in order, convert and cache them.

    Raises OfflineError with instructions when offline or unreachable.
    """
    entry = registry_entry(get_variant(key).weights_key if key not in load_registry() else key)
    if entry.bundled is not None:
        return verify_bundled(entry)  # shipped with the package: nothing to fetch
    root = cache_dir(cache)
    dest = cached_weights(entry.key, root)
    if dest.exists() and not force:
        verify_cached(dest)
        return dest
    root.mkdir(parents=True, exist_ok=True)
    # One download per file at a time, across processes; who waited finds it done.
    with FileLock(str(dest) + ".lock"):
        if dest.exists() and not force:
            verify_cached(dest)
            return dest
        return _download(entry, root, dest, on_progress)


def _download(entry: WeightsEntry, root: Path, dest: Path, on_progress: ByteProgress | None) -> Path:
    how = f"run `mimo weights download {entry.key}` on a connected machine and copy {root} here, or pass --weights PATH"
    if offline():
        raise OfflineError(f"no cached weights for {entry.key} and HF_HUB_OFFLINE is set", how)
    errors: list[str] = []
    for source in entry.sources:
        try:
            if source.startswith("gdrive://"):
                raw = root / "downloads" / entry.filename
                download_gdrive(source.removeprefix("gdrive://"), raw, entry.sha256, entry.size, on_progress)
            else:
                raw = hf_download(source)
            sd = read_state_dict(raw)
            _, variant = build_model(sd, source)
            arch = get_variant(entry.architecture)
            if (variant.num_res, variant.base_channel) != (arch.num_res, arch.base_channel):
                raise IntegrityError(
                    f"{source}: holds a MIMO-UNet with {variant.num_res} blocks of {variant.base_channel} channels, "
                    f"but {entry.key} has {arch.num_res} of {arch.base_channel}",
                    "the published file has changed; report it, or pass --weights PATH",
                )
            info = {"source": source, "source_sha256": sha256_file(raw), "source_size": raw.stat().st_size}
            convert(sd, variant, dest, **info)
            if raw.parent == root / "downloads":
                raw.unlink()
            return dest
        except OfflineError as e:
            errors.append(str(e))
            continue
    raise OfflineError(f"could not download weights for {entry.key}: {'; '.join(errors)}", how)


def import_weights(
    src: str | os.PathLike[str], key: str | None = None, cache: str | os.PathLike[str] | None = None
) -> tuple[Path, Variant]:
    """Convert a checkpoint to safetensors in the cache, once. With ``key``, cache it as that
    variant's weights (the official slot that ``--variant`` uses); without, apart from them, as
    imported/NAME-SHA256.safetensors, so that a file of unknown origin never passes for the
    authors' weights. Raises WeightsError when it is no MIMO-UNet or does not fit ``key``."""
    p = Path(src).expanduser()
    sd = read_state_dict(p)
    _, detected = build_model(sd, str(p))
    root = cache_dir(cache)
    digest = sha256_file(p)
    if key is not None:
        v = get_variant(key)
        if (v.num_res, v.base_channel) != (detected.num_res, detected.base_channel):
            raise WeightsError(
                f"{p}: holds {detected.name} weights "
                f"({detected.num_res} blocks of {detected.base_channel} channels), not {v.name}",
                f"import it as {detected.name}",
            )
        dest = cached_weights(v.weights_key, root)
    else:
        dest = root / IMPORTED / f"{p.stem}-{digest[:12]}.safetensors"
    if dest.exists() and _record_path(dest).exists():
        with contextlib.suppress(IntegrityError):
            if verify_cached(dest).get("source_sha256") == digest:
                return dest, detected  # converted once already
    convert(sd, detected, dest, source=str(p.resolve()), source_sha256=digest, source_size=p.stat().st_size)
    return dest, detected


@dataclass(frozen=True)
class LoadedWeights:
    """A model and where its weights came from (for records and bug reports)."""

    model: MIMOUNet
    variant: Variant  # the variant asked for, or the bundled fallback that stood in for it
    name: str  # the registry key, or the file the user passed
    path: Path
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "variant": self.variant.name, "sha256": self.sha256}


def fallback_entry() -> WeightsEntry | None:
    """The bundled weights that stand in when the default variant's cannot be had, if any are
    marked good enough for it (``"fallback": true`` in the registry)."""
    return next((e for e in load_registry().values() if e.fallback and e.bundled is not None), None)


def load_weights(
    variant: str | None = None,
    device: str | torch.device = "auto",
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> LoadedWeights:
    """``load_model`` plus the weights' name, path and sha256.

    With neither ``variant`` nor ``weights``, the default variant (MIMO-UNet+) is used when it is
    cached or can be downloaded; when it cannot (offline, unreachable), the bundled model stands in
    with a warning (``warnings.warn``) if the registry marks one as good enough, and otherwise the
    error names the bundled variant as an option.
    Raises WeightsError (or a subclass) when no weights can be had.
    """
    from .device import resolve_device

    v = get_variant(variant or DEFAULT_VARIANT)
    try:
        path = resolve_weights(v, weights, cache_dir, on_progress)
    except (OfflineError, DownloadError) as e:
        if variant is not None or weights is not None:
            raise
        fb = fallback_entry()
        if fb is None:
            raise type(e)(
                e.message, f"{e.hint}; or use mimocli's own small bundled model: --variant {BUNDLED_VARIANT}"
            ) from e
        warnings.warn(
            f"{v.name} weights cannot be had ({e.message}); using mimocli's bundled {fb.key}, which deblurs "
            f"less well: for {v.name}, {e.hint}",
            UserWarning,
            stacklevel=2,
        )
        v = get_variant(fb.architecture)
        path = verify_bundled(fb)
    model, _ = build_model(read_state_dict(path), str(path))
    model.ensemble = v.ensemble  # MIMO-UNet++ is MIMO-UNet+ run as a self-ensemble
    name = str(weights) if weights is not None else v.weights_key
    return LoadedWeights(model.to(resolve_device(device)), v, name, path, sha256_file(path))


def load_model(
    variant: str = "mimo-unet-plus",
    device: str | torch.device = "auto",
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_progress: ByteProgress | None = None,
) -> MIMOUNet:
    """A MIMO-UNet in eval mode with pretrained weights, on ``device`` ("auto": CUDA, else MPS, else CPU).

    ``weights``: a local .safetensors/.pkl/.pth or hf://owner/repo/file[@rev]; default: the
    variant's registered weights, downloaded once into the cache (or shipped in the package, for
    mimo-unet-lite). The architecture follows the weights. Raises WeightsError (or a subclass)
    when they cannot be had.
    """
    return load_weights(variant, device, weights, cache_dir, on_progress).model


def _record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache_listing(cache: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered weights, then one per imported file: name, description, cached
    path or None, size, where the file came from and its sha256 (as recorded when it was made;
    ``mimo deblur`` checks it on every load)."""
    root = cache_dir(cache)
    rows = []
    for key, e in load_registry().items():
        path = e.bundled or cached_weights(key, root)
        record = {} if e.bundled else _record(path)
        sha = e.sha256 if e.bundled else record.get("sha256")
        rows.append(
            {
                "name": key,
                "description": e.description,
                "bundled": e.bundled is not None,
                "cached": path.exists(),
                "path": str(path) if path.exists() else None,
                "size": path.stat().st_size if path.exists() else None,
                "source": record.get("source") or (e.sources[0] if e.sources else None),
                "sha256": sha if path.exists() else None,
                "metrics": dict(e.metrics),
            }
        )
    for path in sorted((root / IMPORTED).glob("*.safetensors")):
        record = _record(path)
        rows.append(
            {
                "name": f"{IMPORTED}/{path.stem}",
                "description": "imported by `mimo weights import`; use it with --weights PATH",
                "bundled": False,
                "cached": True,
                "path": str(path),
                "size": path.stat().st_size,
                "source": record.get("source"),
                "sha256": record.get("sha256"),
                "metrics": {},
            }
        )
    return rows
