"""Replicate throughput (archive → site cache, copy + md5 verify) against `cp -r`.

For each file-size profile the same files are copied by `cp -r` and replicated by
skybatch into fresh directories, alternating, --runs times; the medians are compared.
The ratio is skybatch throughput / cp throughput (target >= 0.9); hard-link mode is
shown as well. Files are in the page cache for both, so this measures the copy path.

Then the same against an S3 object store (a local moto server, started here): an
archive in a bucket replicated to a site cache (S3 → site) and a site cache's files
staged into a bucket (site → S3), against the plain copy of the same bytes with boto3
(``download_file``/``upload_file``, what ``aws s3 cp`` does) on as many threads.

    python benchmarks/backbone_replicate.py [--runs 5] [--workers 2] [--no-s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _backbone_setup import make_backbone, make_registered, write_files

from skybatch.backbone.catalog import FileRecord
from skybatch.backbone.maintenance import register_paths
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone
from skybatch.backbone.transfer import TransferMode
from skybatch.settings import load_settings

PROFILES = {"large files": (64, 8 * 1024 * 1024), "small files": (2000, 64 * 1024)}
#: Fewer bytes through the local S3 server (moto keeps every object in its memory).
S3_PROFILES = {"large files": (16, 8 * 1024 * 1024), "small files": (200, 64 * 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-s3", action="store_true", help="skip the object-store figures")
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
    if not args.no_s3:
        s3_figures(args.runs, args.workers)


def s3_figures(runs: int, workers: int) -> None:
    """S3 → site and site → S3 through the backbone against boto3's plain copies."""
    import boto3

    from skybatch.testing.s3 import local_s3_server, s3_environment

    print()
    print(f"S3 (local moto server) vs boto3 download_file/upload_file, median of {runs} runs")
    print(
        f"{'direction':<10} {'profile':<12} {'files':>6} {'MiB':>6} {'boto3 MB/s':>10} "
        f"{'skybatch MB/s':>13} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp, local_s3_server(Path(tmp) / "s3") as url:
        os.environ.update(s3_environment(url, Path(tmp) / "s3"))
        client = boto3.client("s3", endpoint_url=url)
        for n, (name, (count, size)) in enumerate(S3_PROFILES.items()):
            root = Path(tmp) / f"p{n}"
            bucket = f"bench-{n}"
            client.create_bucket(Bucket=bucket)
            backbone = Backbone.from_settings(load_settings(home=root / "home"), workers=workers)
            backbone.add_endpoint("archive", "archive", f"s3://{bucket}/archive", {})
            backbone.add_endpoint("site:src", "site", str(root / "src"), {})
            paths = write_files(root, "bench", count, size)  # under root/archive
            for path in paths:
                local = backbone.endpoint("site:src").temp_path(path)
                os.replace(root / "archive" / path, local)
                backbone.endpoint("site:src").commit(path, durable=False)
                client.upload_file(str(root / "src" / path), bucket, f"archive/{path}")
            register_paths(backbone, "site:src", paths, run="bench")
            backbone.catalog.register(
                [
                    FileRecord(f.path, f.size_bytes, f.md5)
                    for f in backbone.select_files(run="bench")
                ],
                "archive",
            )
            files = backbone.select_files(run="bench")
            times: dict[str, list[float]] = {k: [] for k in ("get", "sb_get", "put", "sb_put")}
            for i in range(runs):
                dest = root / f"get{i}"
                times["get"].append(_boto3_copies(client, bucket, paths, dest, workers, "get"))
                site = f"site:{i}"
                backbone.add_endpoint(site, "site", str(root / f"site{i}"), {})
                start = time.perf_counter()
                replicate(backbone, files, site, source="archive")
                times["sb_get"].append(time.perf_counter() - start)

                prefix = f"put{i}"
                times["put"].append(
                    _boto3_copies(client, bucket, paths, root / "src", workers, "put", prefix)
                )
                target = f"s3:{i}"
                backbone.add_endpoint(target, "archive", f"s3://{bucket}/sb{i}", {})
                start = time.perf_counter()
                replicate(backbone, files, target, source="site:src")
                times["sb_put"].append(time.perf_counter() - start)
                shutil.rmtree(dest)
            mb = count * size / 1e6
            for direction, plain, ours in (
                ("S3 → site", "get", "sb_get"),
                ("site → S3", "put", "sb_put"),
            ):
                plain_s, ours_s = statistics.median(times[plain]), statistics.median(times[ours])
                print(
                    f"{direction:<10} {name:<12} {count:>6} {count * size / 2**20:>6.0f} "
                    f"{mb / plain_s:>10.0f} {mb / ours_s:>13.0f} {plain_s / ours_s:>6.2f}"
                )


def _boto3_copies(
    client: Any,
    bucket: str,
    paths: list[str],
    local: Path,
    workers: int,
    direction: str,
    prefix: str = "archive",
) -> float:
    """Seconds to download (``get``: from ``prefix``) or upload (``put``: to ``prefix``)
    every path with boto3 on ``workers`` threads, the downloads synced to disk."""

    def one(path: str) -> None:
        if direction == "get":
            target = local / path
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{prefix}/{path}", str(target))
        else:
            client.upload_file(str(local / path), bucket, f"{prefix}/{path}")

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, paths))
    if direction == "get":
        subprocess.run(["sync", "-f", str(local)], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
