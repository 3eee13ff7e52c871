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
