from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mimocli.images import read_image, write_image

from .conftest import photo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_deblurs_offline_with_the_bundled_model(tmp_path):
    """`pip install .` carries the bundled weights: the wheel alone deblurs with --variant lite
    offline, from a folder that is not the source checkout."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0 and "hatchling" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("the build backend cannot be downloaded here")
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mimocli-*.whl")
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    assert subprocess.run(install, capture_output=True, timeout=300).returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    write_image(work / "shot.png", photo(48, 64))
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "MIMO_CACHE_DIR": str(tmp_path / "cache"),
    }
    where = subprocess.run(
        [sys.executable, "-c", "import mimocli; print(mimocli.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target)), where.stdout  # the wheel's copy, not the checkout
    r = subprocess.run(
        [sys.executable, "-m", "mimocli", "deblur", "shot.png", "--variant", "lite", "--json", "--quiet"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["weights"]["name"] == "mimo-unet-lite"
    assert read_image(work / "shot_deblurred.png").pixels.shape == (48, 64, 3)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def _dry_run(*requirements: str) -> dict[str, str]:
    """What pip would install for ``requirements`` in an empty environment (resolved on the index)."""
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report", "-"]
        + list(requirements),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if report.returncode != 0:
        pytest.skip(f"the package index cannot be reached here ({report.stderr.strip().splitlines()[-1:]})")
    return {
        i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
        for i in json.loads(report.stdout)["install"]
    }


@pytest.mark.slow
def test_the_heif_extra_installed_after_the_serve_extra_keeps_gradios_pillow():
    """`pip install "mimocli[serve]"`, then `"mimocli[heif]"` (as README shows): the second
    must not need a Pillow that Gradio refuses. The heif extra alone must choose the same
    pillow-heif as it does next to Gradio's Pillow; before the pin it chose 1.9, which needs
    Pillow 13, and pip then upgraded Pillow past Gradio's bound."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (heif,) = extras["heif"]
    gradio_pillow = "pillow<13"  # what Gradio 5 and 6 require
    alone, beside_gradio = _dry_run(heif), _dry_run(heif, gradio_pillow)
    assert alone["pillow-heif"] == beside_gradio["pillow-heif"], (alone, beside_gradio)
