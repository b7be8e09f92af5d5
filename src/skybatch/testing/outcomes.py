"""What a run or campaign left behind, and how it compares with an uninterrupted one.

:func:`snapshot` reads a skybatch home and its repository: the Butler datasets
(dataset type and data id) of each output run, and the integrity problems found:
a dataset the Butler or the backbone catalog holds twice, a catalog file whose size
or md5 no longer matches its file on an endpoint where it is online, a Butler dataset
without its file, and temporary or partial files left in the home, the site cache or
the archive. :func:`compare` says what was lost or duplicated against a reference.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

__all__ = ["Comparison", "Snapshot", "compare", "leftover_temp_files", "snapshot"]

#: A dataset as compared between runs: (dataset type, sorted data id items).
Key = tuple[str, tuple[tuple[str, Any], ...]]

#: Names of files written under a temporary name and renamed when complete.
_TEMP = re.compile(r"(\.skybatch-part$|\.partial(\.[A-Za-z0-9]+)?$|\.tmp$)")


@dataclass
class Snapshot:
    """Datasets per run family and the integrity problems of a home and repository."""

    #: Run family (see :func:`snapshot`'s ``family``) -> dataset -> how many times held.
    datasets: dict[str, Counter[Key]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.datasets.values())


@dataclass
class Comparison:
    lost: list[str]
    duplicated: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.extra)


def _same_run(run: str) -> str:
    return run


def snapshot(
    home: Path,
    repo: Path,
    runs: Iterable[str],
    *,
    family: Callable[[str], str] = _same_run,
    check_files: bool = True,
) -> Snapshot:
    """Read what ``runs`` left in ``repo`` and in the skybatch ``home``.

    ``family`` maps a run name to the key it is compared under (a campaign's run
    names carry its id, which differs between a trial and its reference).
    """
    from lsst.daf.butler import Butler, MissingCollectionError

    runs = sorted(set(runs))
    out = Snapshot()
    ids: Counter[str] = Counter()
    with Butler.from_config(str(repo)) as butler:
        for run in runs:
            try:
                refs = butler.query_all_datasets(run, find_first=False, limit=None)
            except MissingCollectionError:
                refs = []
            counts = out.datasets.setdefault(family(run), Counter())
            for ref in refs:
                ids[str(ref.id)] += 1
                counts[(ref.datasetType.name, tuple(sorted(ref.dataId.required.items())))] += 1
                if check_files and not Path(butler.getURI(ref).ospath).is_file():
                    out.problems.append(f"{run}: {ref.datasetType.name} has no file")
    out.problems += [f"Butler dataset {i} held {n} times" for i, n in ids.items() if n > 1]
    if check_files:
        out.problems += _catalog_problems(home, runs, set(ids))
        out.problems += [f"temporary file left: {p}" for p in leftover_temp_files(home, repo)]
    return out


def _catalog_problems(home: Path, runs: list[str], in_butler: set[str]) -> list[str]:
    """Duplicate catalog entries, Butler datasets of ``runs`` the catalog lacks (and
    catalog entries the Butler lacks), files whose size or md5 differs from the catalog."""
    from skybatch.backbone.checksums import md5_file
    from skybatch.backbone.models import EndpointRow, FileRow, ReplicaRow, ReplicaState
    from skybatch.db.state import open_state_db
    from skybatch.settings import load_settings

    if not (home / "state.sqlite3").exists():
        return []
    problems: list[str] = []
    sessions = open_state_db(load_settings(home=home))
    with sessions() as session:
        per_id = Counter(
            session.scalars(
                select(FileRow.dataset_id).where(
                    FileRow.run.in_(runs), FileRow.dataset_id.is_not(None)
                )
            )
        )
        problems += [f"catalog holds dataset {i} {n} times" for i, n in per_id.items() if n > 1]
        problems += [f"Butler dataset {i} is not in the catalog" for i in in_butler - set(per_id)]
        problems += [f"catalog dataset {i} is not in the Butler" for i in set(per_id) - in_butler]
        rows = session.execute(
            select(FileRow.path, FileRow.size_bytes, FileRow.md5, EndpointRow.root)
            .join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
            .join(EndpointRow, EndpointRow.id == ReplicaRow.endpoint_id)
            .where(ReplicaRow.state == ReplicaState.ONLINE.value)
        ).all()
    for path, size, md5, root in rows:
        local = Path(root) / path
        if not local.exists():
            problems.append(f"catalog file missing on disk: {local}")
            continue
        if md5_file(local) != (size, md5):
            problems.append(f"catalog md5/size does not match the file: {local}")
    return problems


def leftover_temp_files(*roots: Path) -> list[Path]:
    """Files under ``roots`` with a temporary or partial name (an unfinished write)."""
    found: list[Path] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            found += [Path(dirpath) / f for f in files if _TEMP.search(f)]
    return sorted(set(found))


def compare(reference: Snapshot, got: Snapshot) -> Comparison:
    """Datasets of the reference missing from ``got`` (lost), held more than once
    (duplicated), or not in the reference (extra)."""
    lost: list[str] = []
    duplicated: list[str] = []
    extra: list[str] = []
    for key in sorted(set(reference.datasets) | set(got.datasets)):
        want = reference.datasets.get(key, Counter())
        have = got.datasets.get(key, Counter())
        lost += [f"{key}: {t} {dict(d)}" for (t, d) in want if (t, d) not in have]
        extra += [f"{key}: {t} {dict(d)}" for (t, d) in have if (t, d) not in want]
        duplicated += [f"{key}: {t} {dict(d)} x{n}" for (t, d), n in have.items() if n > 1]
    return Comparison(lost, duplicated, extra)
