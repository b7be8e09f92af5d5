"""How long skybatch takes to refuse each broken campaign of the test corpus.

Every file of ``tests/campaign/data/broken/`` must be refused by ``skybatch campaign
validate`` and ``campaign submit`` with exit status 2, in under 5 s (issue 12). This
script runs both commands on each file as a user would, each in a fresh process
(``python -m skybatch``, so the LSST imports are included), ``--runs`` times per file
and command, against a real Butler repository that has the demo campaign's collections
(as the tests use). It also times the same refusal in-process (the loader only, no
interpreter start or imports: what a long-lived service pays).

Prints a table per file (median wall seconds of the fresh-process runs of validate
and submit, and of the in-process runs), then the median and the maximum over files,
the baseline (``campaign validate`` of the valid campaign the corpus files are made
from, ``parts/valid.yaml``, which does every check) and the ratio of the slowest
refusal to it, the load average (the figures are wall times), and any file that was
not refused with exit 2.

    nice python benchmarks/broken_campaigns.py [--runs 3] [--match TEXT]

``--match`` keeps the files whose name contains TEXT (e.g. ``a_yaml``).
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

import skybatch.demo

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "campaign" / "data" / "broken"
PIPELINES = Path(skybatch.demo.__file__).parent / "pipelines"

#: The demo survey's collections that the demo campaign names (see skybatch.demo.survey).
COLLECTIONS = {"DemoCam/raw/all": "RUN", "DemoCam/calib": "CALIBRATION", "skymaps": "RUN"}


def make_survey(root: Path) -> Path:
    """A survey directory: a repository with the demo's collections, an empty refcat."""
    from lsst.daf.butler import Butler, CollectionType

    Butler.makeRepo(str(root / "repo"))
    with Butler.from_config(str(root / "repo"), writeable=True) as butler:
        for name, kind in COLLECTIONS.items():
            butler.collections.register(name, CollectionType[kind])
        butler.collections.register("DemoCam/defaults", CollectionType.CHAINED)
        butler.collections.redefine_chain("DemoCam/defaults", list(COLLECTIONS))
    (root / "refcat.sqlite").write_bytes(b"")
    return root


def fresh(command: str, path: Path, home: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and exit status of ``skybatch campaign COMMAND PATH`` in a new process."""
    args = [sys.executable, "-m", "skybatch", "--home", str(home), "campaign", command, str(path)]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def in_process(path: Path) -> tuple[float, bool]:
    """Wall seconds of loading ``path`` in this process, and whether it was refused."""
    from skybatch.campaign.errors import CampaignConfigError
    from skybatch.campaign.load import load_campaign

    start = time.perf_counter()
    try:
        load_campaign(path)
    except CampaignConfigError:
        return time.perf_counter() - start, True
    return time.perf_counter() - start, False


def _row(name: str, seconds: list[float]) -> str:
    validate, submit, loaded = seconds
    return f"{name[:44]:<44} {validate:>9.2f} {submit:>9.2f} {loaded:>9.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="Runs per file and command.")
    parser.add_argument("--match", default="", help="Only files whose name contains this.")
    args = parser.parse_args()
    files = [p for p in sorted(BROKEN.glob("*.yaml")) if args.match in p.name]
    with tempfile.TemporaryDirectory(prefix="skybatch-broken-") as tmp:
        survey = make_survey(Path(tmp) / "survey")
        env = {**os.environ, "DEMO_SURVEY": str(survey), "DEMO_PIPELINES": str(PIPELINES)}
        os.environ.update(DEMO_SURVEY=str(survey), DEMO_PIPELINES=str(PIPELINES))
        home = Path(tmp) / "home"
        in_process(files[0])  # imports, once, as a long-lived process has them
        baseline = statistics.median(
            fresh("validate", BROKEN / "parts" / "valid.yaml", home, env)[0]
            for _ in range(args.runs)
        )
        rows: list[tuple[str, float, float, float]] = []
        wrong: list[str] = []
        print(f"{len(files)} files, {args.runs} runs each (median wall seconds)")
        print(f"{'file':<44} {'validate':>9} {'submit':>9} {'in-proc':>9}")
        for path in files:
            medians = []
            for command in ("validate", "submit"):
                times = []
                for _ in range(args.runs):
                    seconds, code = fresh(command, path, home, env)
                    times.append(seconds)
                    if code != 2:
                        wrong.append(f"{path.name}: {command} exited {code}")
                medians.append(statistics.median(times))
            loads = [in_process(path) for _ in range(args.runs)]
            if not all(refused for _, refused in loads):
                wrong.append(f"{path.name}: accepted in-process")
            medians.append(statistics.median(s for s, _ in loads))
            rows.append((path.name, *medians))
            print(_row(path.stem, medians))
            if home.exists() and any(p.is_file() for p in home.rglob("*")):
                wrong.append(f"{path.name}: files written in the skybatch home")
        for label, pick in (("median", statistics.median), ("max", max)):
            values = [pick(r[i] for r in rows) for i in (1, 2, 3)]
            print(
                f"{label + ' over files':<44} {values[0]:>9.2f} {values[1]:>9.2f} {values[2]:>9.3f}"
            )
        slowest = max(rows, key=lambda r: max(r[1], r[2]))
        worst = max(slowest[1], slowest[2])
        print(f"slowest file: {slowest[0]} ({worst:.2f} s; target < 5 s)")
        print(
            f"baseline (validate of the valid campaign): {baseline:.2f} s; "
            f"slowest refusal / baseline: {worst / baseline:.2f}"
        )
        print("load average (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
        print("not refused with exit 2: " + ("; ".join(wrong) if wrong else "none"))


if __name__ == "__main__":
    main()
