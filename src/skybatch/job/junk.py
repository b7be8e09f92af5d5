"""The junk tarball (seed step 11): whatever else the job left in its workdir.

Tasks and libraries sometimes write files nobody declared (debug plots, core dumps,
a failed quantum's partial outputs, temporary files). They are not registered, but
when ``spec.junk_tarball`` is set they are kept in ``workdir/junk.tar.gz`` so an
operator can look at them after the scratch space is gone.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["JUNK_NAME", "WRAPPER_FILES", "find_junk", "write_junk_tarball"]

JUNK_NAME = "junk.tar.gz"

#: Files the wrapper itself writes in the workdir (relative to it).
WRAPPER_FILES = frozenset({"butler.yaml", "job.log", JUNK_NAME})


def find_junk(workdir: Path, known: Iterable[Path]) -> list[str]:
    """Files (and symlinks) under ``workdir`` that are not in ``known``, as sorted
    workdir-relative POSIX paths. ``known`` holds staged inputs, declared outputs
    and the wrapper's own files (spec and report when they live in the workdir).
    """
    root = workdir.resolve()
    skip = {os.path.abspath(p) for p in known}
    skip |= {str(root / name) for name in WRAPPER_FILES}
    junk: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        # Symlinked directories are listed in dirnames but not followed: treat as files.
        entries = filenames + [d for d in dirnames if (here / d).is_symlink()]
        for name in sorted(entries):
            full = here / name
            if str(full) not in skip:
                junk.append(full.relative_to(root).as_posix())
    return junk


def write_junk_tarball(workdir: Path, junk: list[str]) -> Path | None:
    """Write ``workdir/junk.tar.gz`` with ``junk`` (symlinks stored as links); None if empty."""
    if not junk:
        return None
    target = workdir / JUNK_NAME
    partial = workdir / f".{JUNK_NAME}.partial"
    with tarfile.open(partial, "w:gz") as tar:
        for name in junk:
            tar.add(workdir / name, arcname=name, recursive=False)
    os.replace(partial, target)
    return target
