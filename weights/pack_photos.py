"""Pack sharp training photos into one file that `mimo train --shake` reads and a GPU machine
can be sent (maintainers; the GPU recipe runs it when no pack is given).

    python weights/pack_photos.py ../shared/data/sharp .pack/sharp.zip

Photos of the training and validation splits (the test split stays out: it is never trained
on), at most 1280 px on the long side, JPEG with 4:4:4 chroma at the highest quality up to 95
that keeps the pack within 40 MiB (what travels to a GPU machine is limited to 64 MiB), stored
uncompressed in a zip under their FOLDER/FILE names, so the split
rule gives the same split. The photos' licences forbid redistribution (see the data's
SOURCES.md): the pack is made where the data is, carried to a GPU machine, never committed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mimocli.train_data import pack_photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", type=Path, nargs="+", help="sharp photos or folders of them")
    ap.add_argument("out", type=Path, help="the pack to write (.zip)")
    ap.add_argument("--long-side", type=int, default=1280)
    ap.add_argument("--quality", type=int, default=95, help="the highest JPEG quality to try")
    ap.add_argument("--max-mib", type=float, default=40.0, help="the size budget of the pack")
    args = ap.parse_args()
    summary = pack_photos(args.photos, args.out, args.long_side, args.quality, int(args.max_mib * 2**20))
    print(json.dumps(asdict(summary)))  # noqa: T201


if __name__ == "__main__":
    main()
