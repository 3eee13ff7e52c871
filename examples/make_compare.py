"""Make the README's before/after picture with mimocli itself.

    python examples/make_compare.py      # writes examples/scene_compare.jpg

Cuts a 320x200 part of examples/scene_shaken.jpg (the "MIMO-UNet" sign and three buildings) and
runs `mimo deblur PART --variant lite --compare` on it: the picture is the comparison image that
command writes, the blurry part and mimocli's bundled model's output side by side, labelled.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
X, Y, W, H = 20, 10, 320, 200


def main() -> None:
    scene = cv2.imread(str(HERE / "scene_shaken.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "scene.png"
        cv2.imwrite(str(part), scene[Y : Y + H, X : X + W])
        cmd = [sys.executable, "-m", "mimocli", "deblur", str(part), "--variant", "lite", "--compare", "-q"]
        subprocess.run([*cmd, "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        both = cv2.imread(str(Path(tmp) / "scene_compare.png"))
    cv2.imwrite(str(HERE / "scene_compare.jpg"), both, [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main()
