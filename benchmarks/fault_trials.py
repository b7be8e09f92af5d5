"""Fault trials: kill, fill, lock and corrupt skybatch on the demo survey, restart it as
an operator would, and compare what it left with an uninterrupted reference.

Each trial works on a fresh copy of a small demo survey (3 visits, 2 detectors; the
demo campaign takes 10-20 s) with its own skybatch home:

* the campaign manager and all its workers SIGKILLed at a random moment of the demo
  campaign (``campaign submit`` + ``manager run --once``), then ``manager run --once``
  again (``campaign retry`` if the campaign failed);
* ``skybatch run`` of the demo pipeline SIGKILLed at every named kill point of its
  set-up and finish (``SKYBATCH_FAULT_KILL_AT``), then at random moments, then
  ``skybatch run --resume``;
* once each: a worker killed mid-job; the site cache on a small tmpfs that fills up
  (the campaign must fail saying the disk is full; ``campaign retry`` after freeing
  space must finish it; needs root for ``mount``); the state database held with
  ``BEGIN EXCLUSIVE`` by another process for 60 s; a flipped byte in a cached raw.

A trial passes when the work ended ``succeeded`` with the reference's dataset types and
data ids per run or group, no dataset held twice (Butler or backbone catalog), every
catalog md5 true to its file, and no temporary file left. Prints a line per trial and
the totals lost and duplicated (target: 0 and 0).

    nice python benchmarks/fault_trials.py [--trials 20] [--seed 1] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from skybatch.testing.trials import SPECIAL, TrialWorld, plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="number of trials")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the kill moments")
    parser.add_argument("--workdir", type=Path, help="where surveys and homes go")
    parser.add_argument("--keep", action="store_true", help="keep the directories of passed trials")
    parser.add_argument(
        "--skip", action="append", default=[], choices=SPECIAL, help="leave out a special trial"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="skybatch-fault-trials-"))
    world = TrialWorld(workdir, keep=args.keep)
    start = time.monotonic()
    print(f"fault trials in {workdir}: building the survey and the references...", flush=True)
    world.build()
    print(
        f"reference campaign {world.campaign_seconds:.1f} s, reference run "
        f"{world.run_seconds:.1f} s",
        flush=True,
    )
    trials = plan(
        args.trials,
        campaign_s=world.campaign_seconds,
        run_s=world.run_seconds,
        seed=args.seed,
        special=[s for s in SPECIAL if s not in args.skip],
    )
    results = []
    for i, trial in enumerate(trials, 1):
        result = trial.run(world)
        results.append(result)
        mark = "ok  " if result.ok else "FAIL"
        print(
            f"[{i:2d}/{len(trials)}] {mark} {result.name:<34} {result.seconds:5.1f} s  "
            f"lost {result.lost} dup {result.duplicated}  {result.detail}",
            flush=True,
        )
        for problem in result.problems[:8]:
            print(f"         - {problem}", flush=True)
    passed = sum(r.ok for r in results)
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    print()
    print(f"trials run: {len(results)}, passed: {passed}/{len(results)}")
    print(f"datasets lost: {lost}, duplicated: {duplicated} (target 0 and 0)")
    for r in results:
        if not r.ok:
            print(f"failed: {r.name}: {'; '.join(r.problems[:3])}")
    print(f"total {time.monotonic() - start:.0f} s")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
