"""Replicate throughput (archive → site cache, copy + md5 verify) against `cp -r`.

For each file-size profile the same files are copied by `cp -r` and replicated by
skybatch into fresh directories, alternating, --runs times; the medians are compared.
The ratio is skybatch throughput / cp throughput (target >= 0.9); hard-link mode is
shown as well. Files are in the page cache for both, so this measures the copy path.

    python benchmarks/backbone_replicate.py [--runs 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _backbone_setup import make_backbone, make_registered

from skybatch.backbone.replication import replicate
from skybatch.backbone.transfer import TransferMode

PROFILES = {"large files": (64, 8 * 1024 * 1024), "small files": (2000, 64 * 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"replicate vs cp -r, median of {args.runs} runs, {args.workers} transfer threads")
    print(
        f"{'profile':<12} {'files':>6} {'MiB':>6} {'cp MB/s':>8} {'skybatch MB/s':>13} "
        f"{'ratio':>6} {'hardlink MB/s':>13}"
    )
    for name, (count, size) in PROFILES.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            backbone = make_backbone(root, workers=args.workers)
            files = make_registered(backbone, root, "bench", count, size)
            source = root / "archive" / "bench"
            total = count * size
            cp_times, sb_times, link_times = [], [], []
            for i in range(args.runs):
                dest = root / f"cp{i}"
                start = time.perf_counter()
                subprocess.run(["cp", "-r", str(source), str(dest)], check=True)
                subprocess.run(["sync", "-f", str(dest)], check=True)
                cp_times.append(time.perf_counter() - start)
                shutil.rmtree(dest)

                site = f"site:{i}"
                backbone.add_endpoint(site, "site", str(root / f"site{i}"), {})
                start = time.perf_counter()
                replicate(backbone, files, site)
                sb_times.append(time.perf_counter() - start)

                link_site = f"link:{i}"
                backbone.add_endpoint(link_site, "site", str(root / f"link{i}"), {})
                start = time.perf_counter()
                replicate(backbone, files, link_site, mode=TransferMode.HARDLINK)
                link_times.append(time.perf_counter() - start)
            cp_s, sb_s, link_s = (statistics.median(t) for t in (cp_times, sb_times, link_times))
            mb = total / 1e6
            print(
                f"{name:<12} {count:>6} {total / 2**20:>6.0f} {mb / cp_s:>8.0f} "
                f"{mb / sb_s:>13.0f} {cp_s / sb_s:>6.2f} {mb / link_s:>13.0f}"
            )


if __name__ == "__main__":
    main()
