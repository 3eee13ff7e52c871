"""The weights cache, without torch: where files live (the hub's assets folder, --cache-dir,
$MIMO_CACHE_DIR), the integrity records kept beside them, their checks, and the listing that
`mimo weights list` prints, which therefore needs neither torch nor a model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .downloads import hf_home, sha256_file
from .errors import IntegrityError
from .registry import WeightsEntry, load_registry

CACHE_ENV = "MIMO_CACHE_DIR"
IMPORTED = "imported"  # the cache folder for files imported without --as


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

    assets = hf_home("HF_ASSETS_CACHE", "assets")
    try:
        root = cached_assets_path("mimocli", subfolder="weights", assets_dir=assets)  # creates it
    except OSError:  # a read-only home: reading what is there still works
        return assets / "mimocli" / "default" / "weights"
    _move_old_cache(hf_home("HF_HUB_CACHE", "hub") / "mimocli", root)
    return root


def side_cache(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """Where mimocli keeps ``name`` (the int8 models, the precision measurements) beside the
    weights: inside the weights cache when --cache-dir or $MIMO_CACHE_DIR names one, so that one
    folder holds everything a run reads and writes; else beside the default weights folder, in
    the hub's assets folder (<HF_HOME>/assets/mimocli/default/NAME)."""
    if override or os.environ.get(CACHE_ENV):
        return cache_dir(override) / name
    from .downloads import hf_home

    return hf_home("HF_ASSETS_CACHE", "assets") / "mimocli" / "default" / name


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
    record_file = record_path(path)
    fix = f"delete {path} and fetch it again (mimo weights download --force), or pass --weights PATH"
    if path.parent.name == IMPORTED:  # made by `mimo weights import`: nothing to download
        source = read_record(path).get("source")
        fix = f"delete {path} and import the file again (mimo weights import {source or 'FILE'})"
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


def record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_record(path: Path, **info: Any) -> None:
    record = {
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **info,
    }
    write_bytes_atomic(record_path(path), (json.dumps(record, indent=1) + "\n").encode())


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _intact(path: Path, bundled: WeightsEntry | None = None) -> bool | None:
    """Whether a listed file still matches its size and sha256: the registry's for ``bundled``,
    else its record's (None: not there)."""
    if not path.exists():
        return None
    try:
        verify_bundled(bundled) if bundled is not None else verify_cached(path)
    except IntegrityError:
        return False
    return True


def cache_listing(cache: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered weights, then one per imported file: name, description, cached
    path or None, size, where the file came from, its sha256 (as recorded when it was made;
    ``mimo deblur`` checks it on every load) and whether it still matches (``intact``: each file
    is hashed)."""
    root = cache_dir(cache)
    rows = []
    for key, e in load_registry().items():
        path = e.bundled or cached_weights(key, root)
        record = {} if e.bundled else read_record(path)
        sha = e.sha256 if e.bundled else record.get("sha256")
        rows.append(
            {
                "name": key,
                "description": e.description,
                "bundled": e.bundled is not None,
                "cached": path.exists(),
                "intact": _intact(path, e if e.bundled else None),
                "path": str(path) if path.exists() else None,
                "size": path.stat().st_size if path.exists() else None,
                "source": record.get("source") or (e.sources[0] if e.sources else None),
                "sha256": sha if path.exists() else None,
                "metrics": dict(e.metrics),
            }
        )
    for path in sorted((root / IMPORTED).glob("*.safetensors")):
        record = read_record(path)
        rows.append(
            {
                "name": f"{IMPORTED}/{path.stem}",
                "description": "imported by `mimo weights import`; use it with --weights PATH",
                "bundled": False,
                "cached": True,
                "intact": _intact(path),
                "path": str(path),
                "size": path.stat().st_size,
                "source": record.get("source"),
                "sha256": record.get("sha256"),
                "metrics": {},
            }
        )
    return rows
