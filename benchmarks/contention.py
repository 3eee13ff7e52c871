"""`mimo deblur` and `mimo video` while other processes keep the cores busy.

    python benchmarks/contention.py                 # lite, the REDS clip's first 5 frames and one photo
    python benchmarks/contention.py --repeat 5 --frames 10 --variant base

torch's OpenMP threads (GNU libgomp) spin on a core while they wait for work; on cores that other
processes also want, a spinning thread takes the time slice that the thread holding the work
needed, and a run slows down far beyond its share. `mimo` therefore starts with
OMP_WAIT_POLICY=PASSIVE (waiting threads sleep) unless the variable is set. This script times
each command, on quiet cores and with one busy-looping process per core beside it, in three ways:

- libgomp's default (spin, then sleep): what mimo did before, torch imported before mimo's main
- mimo's default (PASSIVE)
- --threads 1

Each row is the median of --repeat runs of the whole command (a fresh process: start-up, model
load and the work), with the busy processes started before and stopped after each timing.

Measured here (Intel Xeon, 2 cores, 2026-12-06, --repeat 3, lite; seconds):

    command  cores  libgomp default  PASSIVE (mimo's)  --threads 1
    video    quiet             5.25       5.24 (1.00x)  7.46 (1.42x)
    video    busy             12.44      10.49 (0.84x) 11.45 (0.92x)
    photo    quiet             1.83       1.90 (1.04x)  1.96 (1.07x)
    photo    busy              5.09       2.96 (0.58x)  3.03 (0.60x)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIP = SHARED / "video" / "reds_020_blur_48f.mp4"
PHOTO = Path(__file__).resolve().parents[1] / "examples" / "scene_blurry.jpg"

# torch imported first: libgomp reads OMP_WAIT_POLICY when it loads, before mimo's main could set it.
SPIN = "import sys, torch; from mimocli.cli import main; sys.argv = ['mimo', *sys.argv[1:]]; main()"
PASSIVE = "import sys; from mimocli.cli import main; sys.argv = ['mimo', *sys.argv[1:]]; main()"
BUSY = "while True: pass"


def timed(code: str, args: list[str], busy: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)  # let them take the cores
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, capture_output=True)
        return time.perf_counter() - t0
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="lite")
    ap.add_argument("--frames", type=int, default=5, help="frames of the REDS clip (24 fps)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--busy", type=int, default=os.cpu_count() or 2, help="busy-looping processes (default: one per core)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    ways = {
        "libgomp default": (SPIN, []),
        "mimo default (PASSIVE)": (PASSIVE, []),
        "--threads 1": (PASSIVE, ["--threads", "1"]),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="mimo-contention-") as tmp:
        end = f"{args.frames / 24:.4f}"
        commands = {
            "video": ["video", str(CLIP), str(Path(tmp) / "out.mp4"), "--end", end, "--overwrite"],
            "photo": ["deblur", str(PHOTO), "-o", str(Path(tmp) / "out.jpg"), "--overwrite"],
        }
        for what, command in commands.items():
            for load, busy in (("quiet", 0), ("busy", args.busy)):
                for way, (code, extra) in ways.items():
                    times = [
                        timed(code, [*command, "--variant", args.variant, "--quiet", *extra], busy)
                        for _ in range(args.repeat)
                    ]
                    rows.append({"command": what, "cores": load, "threads": way, "median_s": statistics.median(times)})
                    print(f"{what:6} {load:6} {way:24} {rows[-1]['median_s']:7.2f} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"\n{'command':8}{'cores':8}{'threads':26}{'median s':>10}{'vs libgomp':>12}")
    for r in rows:
        ref = next(x for x in rows if x["command"] == r["command"] and x["cores"] == r["cores"])
        print(
            f"{r['command']:8}{r['cores']:8}{r['threads']:26}{r['median_s']:10.2f}"
            f"{r['median_s'] / ref['median_s']:11.2f}x"
        )


if __name__ == "__main__":
    main()
