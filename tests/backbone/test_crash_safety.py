"""A replicate killed with SIGKILL leaves a consistent catalog, and a re-run finishes it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from skybatch.backbone.maintenance import recover
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone

N_FILES = 600
FILE_BYTES = 512 * 1024  # 300 MiB in all: long enough to be killed half way

REPLICATE = """
import sys
from pathlib import Path
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone
from skybatch.settings import load_settings

backbone = Backbone.from_settings(load_settings(home=Path(sys.argv[1])))
replicate(backbone, backbone.select_files(run="run/big"), "site:k")
print("finished", flush=True)
"""


def _final_files(root: Path) -> set[str]:
    out = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".skybatch-part"):
                out.add((Path(dirpath) / name).relative_to(root).as_posix())
    return out


def _check_invariants(backbone: Backbone, site_root: Path) -> dict[str, str]:
    """No final file without a catalog row; every online row is a complete, correct file."""
    rows = {p.file.path: p for p in backbone.catalog.replicas_on("site:k")}
    on_disk = _final_files(site_root)
    assert on_disk <= set(rows), f"files without a catalog entry: {sorted(on_disk - set(rows))[:5]}"
    for path, p in rows.items():
        if p.replica.state == ReplicaState.ONLINE:
            data = (site_root / path).read_bytes()
            assert len(data) == p.file.size_bytes, path
            assert hashlib.md5(data).hexdigest() == p.file.md5, path
    return {path: p.replica.state for path, p in rows.items()}


def test_sigkill_during_replicate_leaves_no_orphans_and_rerun_finishes(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    site_root = tmp_path / "site"
    backbone.add_endpoint("site:k", "site", str(site_root), {})
    files = make_files(N_FILES, FILE_BYTES, "run/big")

    proc = subprocess.Popen(
        [sys.executable, "-c", REPLICATE, str(tmp_path / "home")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if site_root.exists() and len(_final_files(site_root)) >= N_FILES // 5:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"replicate ended before it could be killed: {proc.stderr}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    states = _check_invariants(backbone, site_root)
    online = sum(1 for s in states.values() if s == ReplicaState.ONLINE)
    assert online < N_FILES, "the kill must land in the middle of the transfer"
    assert any(s == ReplicaState.STAGING for s in states.values())

    # Recovery settles the in-flight rows without copying anything ...
    recovered = recover(backbone, "site:k")
    assert recovered.completed + recovered.rolled_back == sum(
        1 for s in states.values() if s == ReplicaState.STAGING
    )
    after = _check_invariants(backbone, site_root)
    assert ReplicaState.STAGING not in after.values()
    assert list(site_root.rglob("*.skybatch-part")) == []

    # ... and re-running the same request finishes the job.
    report = replicate(backbone, files, "site:k")
    assert report.files + report.already_there == N_FILES
    final = _check_invariants(backbone, site_root)
    assert set(final.values()) == {ReplicaState.ONLINE} and len(final) == N_FILES
    assert _final_files(site_root) == {f.path for f in files}


def test_rerun_without_recover_also_finishes(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A replica left in 'staging' by a crash is simply copied again by the next run."""
    site_root = tmp_path / "site"
    backbone.add_endpoint("site:k", "site", str(site_root), {})
    files = make_files(10, 1000, "run/big")
    backbone.catalog.set_replicas([f.id for f in files[:4]], "site:k", ReplicaState.STAGING)
    partial = backbone.endpoint("site:k").temp_path(files[0].path)
    partial.write_bytes(b"half a file")
    report = replicate(backbone, files, "site:k")
    assert report.files == 10
    final = _check_invariants(backbone, site_root)
    assert set(final.values()) == {ReplicaState.ONLINE}
    assert not partial.exists()
