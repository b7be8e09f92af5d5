"""Register throughput: size + md5 of files read once, plus the catalog insert.

Prints MB/s and files/s of `register_paths` for large and small files (median of
--runs fresh registrations), against `md5sum` of the same files as the baseline.

    python benchmarks/backbone_register.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _backbone_setup import make_backbone, write_files

from skybatch.backbone.maintenance import register_paths

PROFILES = {"large files": (64, 8 * 1024 * 1024), "small files": (5000, 64 * 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"register (read once: size + md5, then catalog insert), median of {args.runs} runs")
    print(
        f"{'profile':<12} {'files':>6} {'MiB':>6} {'md5sum MB/s':>11} {'register MB/s':>13} "
        f"{'ratio':>6} {'files/s':>8}"
    )
    for name, (count, size) in PROFILES.items():
        times, baseline = [], []
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                backbone = make_backbone(root)
                paths = write_files(root, f"r{run}", count, size)
                start = time.perf_counter()
                subprocess.run(
                    ["xargs", "-0", "md5sum"],
                    input="\0".join(str(root / "archive" / p) for p in paths).encode(),
                    stdout=subprocess.DEVNULL,
                    check=True,
                    cwd=root,
                )
                baseline.append(time.perf_counter() - start)
                start = time.perf_counter()
                register_paths(backbone, "archive", paths, run=f"r{run}")
                times.append(time.perf_counter() - start)
        seconds, base = statistics.median(times), statistics.median(baseline)
        mb = count * size / 1e6
        print(
            f"{name:<12} {count:>6} {count * size / 2**20:>6.0f} {mb / base:>11.0f} "
            f"{mb / seconds:>13.0f} {base / seconds:>6.2f} {count / seconds:>8.0f}"
        )


if __name__ == "__main__":
    main()
