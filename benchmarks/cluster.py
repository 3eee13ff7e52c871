"""Local run against --ray local with 1 and 2 replicas: a folder of 24 photos and the 48-frame
real clip, each command timed end to end (process start, cluster start and model loading
included) as a user runs it, and again with the cluster's fixed costs left out.

    python benchmarks/cluster.py [--variant lite] [--repeat 1]

Needs ../shared beside the checkout (Kodak24 photos, the REDS clip) and the ray extra. On a
machine with C cores, 1 replica takes C CPUs and 2 replicas C/2 each, so all three rows use the
same cores: the ratio shows what the cluster costs, not what more machines would bring.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PHOTOS = SHARED / "sharp" / "Kodak24"
CLIP = SHARED / "video" / "reds_020_blur_48f.mp4"


def mimo(*args: object) -> float:
    """Seconds one `mimo` command takes, start to exit. Raises on failure."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mimocli", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mimo {' '.join(map(str, args))} failed:\n{done.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="lite")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    if not PHOTOS.is_dir() or not CLIP.is_file():
        raise SystemExit(f"needs {PHOTOS} and {CLIP}")
    cores = os.cpu_count() or 2
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:24]
    configs = {
        "local": (),
        "--ray local, 1 replica": ("--ray", "local", "--ray-replicas", "1", "--ray-cpus", str(cores)),
        "--ray local, 2 replicas": ("--ray", "local", "--ray-replicas", "2", "--ray-cpus", str(cores / 2)),
    }
    common = ("--variant", args.variant, "--device", "cpu", "-q")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # The fixed cost of a cluster run: the same command on a single tiny photo.
        one = Path(tmp) / "one"
        one.mkdir()
        (one / photos[0].name).write_bytes(photos[0].read_bytes())
        for c, (name, extra) in enumerate(configs.items()):
            fixed = statistics.median(
                mimo("deblur", one, "-o", Path(tmp) / f"f{c}{i}", *common, *extra) for i in range(args.repeat)
            )
            t_photos = statistics.median(
                mimo("deblur", *photos, "-o", Path(tmp) / f"p{c}{i}", *common, *extra) for i in range(args.repeat)
            )
            t_video = statistics.median(
                mimo("video", CLIP, Path(tmp) / f"v{c}{i}.mp4", "--checkpoint", "12", *common, *extra)
                for i in range(args.repeat)
            )
            rows.append((name, fixed, t_photos, t_video))
            print(name, f"{fixed:.1f} {t_photos:.1f} {t_video:.1f}", file=sys.stderr, flush=True)
    base = rows[0]
    print(f"{cores} cores, {args.variant}; 24 photos: Kodak24 (768x512); video: 48 frames of 1280x720 in 4 segments")
    print("| run | one photo s | 24 photos s | ratio | per photo past the fixed cost s | 48 frames s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, fixed, t_photos, t_video in rows:
        per = (t_photos - fixed) / (len(photos) - 1)
        print(
            f"| {name} | {fixed:.1f} | {t_photos:.1f} | {t_photos / base[2]:.2f} | {per:.2f} | "
            f"{t_video:.1f} | {t_video / base[3]:.2f} |"
        )


if __name__ == "__main__":
    main()
