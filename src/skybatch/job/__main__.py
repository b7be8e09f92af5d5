"""``python -m skybatch.job SPEC.json``: run one job; exit 0 ok, 1 failed, 2 bad spec."""

from __future__ import annotations

import logging
import sys

from .joblog import LOG_FORMAT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m skybatch.job SPEC.json", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    from .main import run_job_file

    return run_job_file(args[0])


if __name__ == "__main__":
    sys.exit(main())
