"""The operations service at scale: the median latency of the main API endpoints and
dashboard pages over a state database of a 100,000-job campaign (issue 14, target
< 100 ms each), against ``/healthz`` as the floor of a request.

What is real: the state database (SQLite in the run's home, or ``--db-url``), migrated
as every command does; ``skybatch serve`` in its own process (uvicorn on a free
loopback port); the requests (httpx over TCP, one keep-alive connection, a viewer
token as bearer for the API and the dashboard's session cookie for the pages and
figures). The database is built fast with bulk inserts through the project's models
(no manager: rows as a finished pass leaves them): one campaign of ``--groups``
groups in two steps (step2 waits for step1) with ``--jobs-per-group`` jobs each, one
quantum run and one attempt per job (CPU time, peak memory, end times over a day),
``--held`` of every 1,000 jobs held with one of four error signatures, the state
events of every group, and ``--campaigns`` small campaigns beside it for the list.

Prints, per endpoint, the time of a first request (cold: the figures are drawn then
and kept while the campaign's quanta stay the same), the median of ``--requests``
requests after it, the median's ratio to ``/healthz``, and whether it is under the
target.

    python benchmarks/service_scale.py [--groups 1000] [--jobs-per-group 100]
        [--campaigns 50] [--requests 9] [--db-url URL]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from skybatch.auth.tokens import create_token
from skybatch.campaign.models import (
    CampaignEventRow,
    CampaignGroupRow,
    CampaignRow,
    CampaignStepRow,
)
from skybatch.db.models import utcnow
from skybatch.db.state import open_state_db
from skybatch.run.models import JobAttemptRow, JobRow, QuantumRunRow, RunRow
from skybatch.settings import Settings, load_settings

TARGET_MS = 100.0
ERRORS = [
    ("oom", "MemoryError: job {n} over 4096 MB"),
    ("error", "RuntimeError: bad pixels in detector {n}"),
    ("error", "ValueError: no PSF stars in visit {n}"),
    ("timeout", "TimeoutError: job {n} ran over 3600 s"),
]
BATCH = 20_000


def _bulk(session: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), BATCH):
        session.execute(insert(model), rows[start : start + BATCH])


def build(settings: Settings, groups: int, jobs_per_group: int, campaigns: int, held: int) -> int:
    """The state database of the big campaign (returned: its id) and the small ones."""
    sessions = open_state_db(settings)
    now = utcnow()
    start = now - timedelta(days=1)
    with sessions.begin() as session:
        big = CampaignRow(
            name="survey-dr1",
            config={"steps": [{"name": "step1"}, {"name": "step2", "depends_on": ["step1"]}]},
            source_path="survey-dr1.yaml",
            state="running",
            summary={},
            started_at=start,
        )
        session.add(big)
        for i in range(campaigns):
            session.add(
                CampaignRow(
                    name=f"small-{i}",
                    config={},
                    source_path=f"small-{i}.yaml",
                    state="succeeded",
                    summary={},
                )
            )
        session.flush()
        steps = [
            CampaignStepRow(campaign_id=big.id, name=name, position=i, state="running")
            for i, name in enumerate(("step1", "step2"))
        ]
        session.add_all(steps)
        session.flush()
        group_rows, run_rows, job_rows, quanta, attempts, events = [], [], [], [], [], []
        job_id = 0
        for g in range(groups):
            step = steps[0] if g < groups // 2 else steps[1]
            run_id = g + 1
            run_name = f"survey-dr1/{big.id}/{step.name}/g{g:05d}"
            failing = False
            for j in range(jobs_per_group):
                job_id += 1
                is_held = job_id % 1000 < held
                failing = failing or is_held
                label = ("isr", "calibrate", "measure")[j % 3]
                kind, error = ERRORS[job_id % len(ERRORS)] if is_held else (None, None)
                ended = start + timedelta(seconds=80_000 * job_id / (groups * jobs_per_group))
                job_rows.append(
                    {
                        "id": job_id,
                        "run_id": run_id,
                        "name": f"{label}_{j:04d}",
                        "label": label,
                        "state": "held" if is_held else "succeeded",
                        "attempts": 1,
                        "memory_mb": 2048,
                        "walltime_s": 3600,
                        "exit_code": 1 if is_held else 0,
                        "failure": kind,
                        "error": error.format(n=job_id) if error else None,
                        "updated_at": ended,
                    }
                )
                cpu = 20.0 + (job_id * 7919 % 600) / 10 * (1 + j % 3)
                rss = 500.0 + (job_id * 104729 % 2000)
                quanta.append(
                    {
                        "run_id": run_id,
                        "job_id": job_id,
                        "attempt": 1,
                        "quantum_id": f"{job_id:032x}",
                        "task_label": label,
                        "data_id": {"visit": g, "detector": j},
                        "status": "failed" if is_held else "succeeded",
                        "start": ended - timedelta(seconds=cpu),
                        "end": ended,
                        "cpu_s": cpu,
                        "max_rss_mb": rss,
                    }
                )
                attempts.append(
                    {
                        "job_id": job_id,
                        "attempt": 1,
                        "state": "held" if is_held else "succeeded",
                        "failure": kind,
                        "exit_code": 1 if is_held else 0,
                        "error": error.format(n=job_id) if error else None,
                        "memory_mb": 2048,
                        "max_rss_mb": rss,
                        "cpu_s": cpu,
                        "submitted_at": ended - timedelta(seconds=cpu),
                        "finished_at": ended,
                    }
                )
            state = "held" if failing else "succeeded"
            run_rows.append(
                {
                    "id": run_id,
                    "name": run_name,
                    "repo": "/nowhere/repo",
                    "pipeline": "drp.yaml",
                    "workdir": f"/nowhere/{run_id}",
                    "state": "failed" if failing else "succeeded",
                    "summary": {},
                    "finished_at": ended,
                }
            )
            group_rows.append(
                {
                    "campaign_id": big.id,
                    "step_id": step.id,
                    "name": f"g{g:05d}",
                    "position": g,
                    "data_query": f"visit = {g}",
                    "state": "failed" if failing else state,
                    "run_name": run_name,
                    "attempts": 1,
                }
            )
            for before, after in (("waiting", "ready"), ("ready", "running")):
                events.append(
                    {
                        "campaign_id": big.id,
                        "kind": "group",
                        "what": f"{step.name}/g{g:05d}",
                        "from_state": before,
                        "to_state": after,
                        "actor": "manager",
                    }
                )
        for model, rows in (
            (RunRow, run_rows),
            (CampaignGroupRow, group_rows),
            (JobRow, job_rows),
            (QuantumRunRow, quanta),
            (JobAttemptRow, attempts),
            (CampaignEventRow, events),
        ):
            _bulk(session, model, rows)
        return big.id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_ms(client: httpx.Client, path: str, n: int, **kw: Any) -> tuple[float, float]:
    """The first request's time (a check too) and the median of ``n`` more (ms)."""
    t0 = time.perf_counter()
    answer = client.get(path, **kw)
    first = (time.perf_counter() - t0) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        answer = client.get(path, **kw)
        answer.read()
        times.append((time.perf_counter() - t0) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--jobs-per-group", type=int, default=100)
    parser.add_argument("--campaigns", type=int, default=50, help="small campaigns beside it")
    parser.add_argument("--held", type=int, default=10, help="held jobs per 1,000")
    parser.add_argument("--requests", type=int, default=9)
    parser.add_argument("--db-url", help="an empty database (default: SQLite in a temp home)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skybatch-service-scale-") as tmp:
        home = Path(tmp) / "home"
        db = {"url": args.db_url} if args.db_url else {}
        settings = load_settings(home=home, db=db)
        t0 = time.perf_counter()
        campaign_id = build(settings, args.groups, args.jobs_per_group, args.campaigns, args.held)
        jobs = args.groups * args.jobs_per_group
        print(
            f"state database ({settings.database_url().split(':')[0]}): {jobs:,} jobs, "
            f"{jobs:,} quanta and attempts in {args.groups:,} groups, "
            f"{args.campaigns + 1} campaigns, built in {time.perf_counter() - t0:.1f} s"
        )
        with open_state_db(settings).begin() as session:
            token = create_token(session, "bench", "viewer").token
        port = _free_port()
        command = [sys.executable, "-m", "skybatch", "--home", str(home)]
        if args.db_url:
            command += ["--db-url", args.db_url]
        server = subprocess.Popen(
            [*command, "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("SKYBATCH_")},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("skybatch serve did not answer")
                time.sleep(0.2)
            measure(url, token, campaign_id, args.requests)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def measure(url: str, token: str, campaign_id: int, n: int) -> None:
    c = campaign_id
    run = f"survey-dr1/{c}/step1/g00000"
    api = [
        ("campaign list", "/api/campaigns"),
        ("overview (cards)", "/api/overview"),
        ("campaign (status)", f"/api/campaigns/{c}"),
        ("groups, page of 100", f"/api/campaigns/{c}/groups?limit=100"),
        ("jobs, page of 100", f"/api/campaigns/{c}/jobs?limit=100"),
        ("jobs, page 500 of 100", f"/api/campaigns/{c}/jobs?limit=100&offset=50000"),
        ("held jobs, page of 100", f"/api/campaigns/{c}/jobs?state=held&limit=100"),
        ("failures by signature", f"/api/campaigns/{c}/failures"),
        ("history, last 50", f"/api/campaigns/{c}/history?limit=50"),
        ("run's jobs, page of 100", f"/api/runs/{run}/jobs?limit=100"),
        ("backbone storage", "/api/backbone/storage"),
        ("metrics", "/metrics"),
        ("campaign report", f"/api/campaigns/{c}/report"),
    ]
    pages = [
        ("page: campaigns", "/ui"),
        ("page: campaign", f"/ui/campaigns/{c}"),
        ("page: run", f"/ui/runs/{run}"),
        ("figure: step graph", f"/ui/campaigns/{c}/graph.svg"),
        ("figure: progress", f"/ui/campaigns/{c}/progress.svg"),
        ("figure: CPU per task", f"/ui/campaigns/{c}/cpu.svg"),
        ("figure: memory per task", f"/ui/campaigns/{c}/memory.svg"),
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        _, floor = median_ms(client, "/healthz", n)
        print(
            f"median of {n} requests after a first one (ms); /healthz (no token, SELECT 1): "
            f"{floor:.1f} ms"
        )
        print(f"{'':28} {'first':>8} {'median':>8} {'x healthz':>10}  target < {TARGET_MS:.0f} ms")
        bearer = {"Authorization": f"Bearer {token}"}
        for name, path in api:
            report(name, *median_ms(client, path, n, headers=bearer), floor)
        client.post(
            "/ui/login",
            content=f"token={token}",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": url},
        )
        for name, path in pages:
            report(name, *median_ms(client, path, n), floor)


def report(name: str, first: float, ms: float, floor: float) -> None:
    mark = "ok" if ms < TARGET_MS else "OVER"
    print(f"{name:28} {first:8.1f} {ms:8.1f} {ms / floor:10.1f}  {mark}")


if __name__ == "__main__":
    main()
