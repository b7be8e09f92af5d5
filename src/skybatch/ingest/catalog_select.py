"""Which of a run's outputs go into the SQL object catalogs (seed step 12), and loading them.

A dataset type is a catalog when two things hold:

- the operator chose it: ``skybatch run --catalog NAME`` (repeatable), a campaign's
  ``policies.catalogs.dataset_types``, or, when neither names any, every output of the
  run (``--no-catalogs`` / ``policies.catalogs.load: false``: none);
- its Butler storage class (asked of the repository, not guessed from the name) holds
  a table: an astropy table, an Arrow table or a pandas DataFrame.

A chosen dataset type of another storage class, a dataset that cannot be read as a
table, or a catalog database that cannot be written is skipped with a warning: the
run's jobs succeeded, so loading catalogs never fails the run
(:class:`CatalogLoad` carries the warnings into the run summary).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TABLE_TYPES", "CatalogLoad", "is_table_storage_class", "load_run_catalogs"]

_log = logging.getLogger(__name__)

#: Python types (module, class) that a table storage class delivers; subclasses
#: count (``QTable`` is an astropy table). None is imported to ask: a storage class's
#: type is one of them only if importing it imported their module.
TABLE_TYPES = (("astropy.table", "Table"), ("pyarrow", "Table"), ("pandas", "DataFrame"))

#: The storage class catalogs are read as (daf_butler converts the others to it).
_READ_AS = "ArrowAstropy"


@dataclass
class CatalogLoad:
    """What loading the catalogs did: rows per dataset type, and what was skipped."""

    rows: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def is_table_storage_class(storage_class: Any) -> bool:
    """Whether datasets of this Butler ``StorageClass`` are tables (see TABLE_TYPES).

    A storage class whose Python type cannot be imported here is not a table.
    """
    try:
        pytype = storage_class.pytype
    except Exception:  # an unknown module (e.g. lsst.afw), a mock's type
        return False
    if not isinstance(pytype, type):
        return False
    for module_name, class_name in TABLE_TYPES:
        module = sys.modules.get(module_name)
        table_type = getattr(module, class_name, None) if module is not None else None
        if isinstance(table_type, type) and issubclass(pytype, table_type):
            return True
    return False


def _storage_class_of(butler: Any, dataset_type: str) -> tuple[Any, str]:
    """The registry's storage class of a dataset type, and its name (for messages)."""
    try:
        dataset_type_obj = butler.get_dataset_type(dataset_type)
    except Exception as exc:
        return None, f"unknown ({type(exc).__name__}: {exc})"
    name = dataset_type_obj.storageClass_name
    try:
        return dataset_type_obj.storageClass, name
    except Exception:  # the storage class is not defined in this process
        return None, name


def load_run_catalogs(
    repo: str,
    db_url: str,
    outputs: Sequence[Any],
    chosen: Sequence[str] | None,
) -> CatalogLoad:
    """Load the catalog outputs of a run (``OutputRef``s) into the database at ``db_url``.

    ``chosen``: the dataset types the operator named; ``None``: every table output;
    empty: none. Never raises for bad data or an unwritable database: see the module.
    """
    result = CatalogLoad()
    if chosen is not None and not chosen:
        return result
    by_type: dict[str, list[Any]] = {}
    for o in outputs:
        by_type.setdefault(o.dataset_type, []).append(o)
    if chosen is not None:
        for name in chosen:
            if name not in by_type:
                result.warnings.append(
                    f"catalog {name}: the run wrote no dataset of this type; nothing loaded"
                )
    names = sorted(by_type) if chosen is None else [n for n in chosen if n in by_type]
    if not names:
        return result
    try:
        _load(repo, db_url, names, by_type, explicit=chosen is not None, result=result)
    except Exception as exc:  # the catalog database, the Butler: reported, not raised
        _log.warning("object catalogs were not loaded", exc_info=True)
        result.rows.clear()
        result.warnings.append(
            f"object catalogs were not loaded: {type(exc).__name__}: {exc} "
            "(the run's outputs are in the Butler; load them again once the cause is fixed)"
        )
    return result


def _load(
    repo: str,
    db_url: str,
    names: list[str],
    by_type: dict[str, list[Any]],
    *,
    explicit: bool,
    result: CatalogLoad,
) -> None:
    from skybatch.run.caches import repository_butler

    from .catalogs import load_tables

    with repository_butler(repo) as butler:
        tables: list[str] = []
        for name in names:
            storage_class, sc_name = _storage_class_of(butler, name)
            if storage_class is not None and is_table_storage_class(storage_class):
                tables.append(name)
            elif explicit:
                result.warnings.append(
                    f"catalog {name}: storage class {sc_name} is not a table (astropy, "
                    "Arrow or DataFrame); skipped"
                )
        if not tables:
            return
        unreadable: dict[str, list[str]] = {}

        def items() -> Iterator[tuple[str, str, dict[str, Any], Any]]:
            for name in tables:
                for o in by_type[name]:
                    try:
                        ref = butler.get_dataset(o.dataset_id)
                        if ref is None:
                            raise LookupError("not in the Butler")
                        table = butler.get(ref, storageClass=_READ_AS)
                        table.colnames  # noqa: B018  (a table, or this raises)
                    except Exception as exc:
                        unreadable.setdefault(name, []).append(f"{type(exc).__name__}: {exc}")
                        continue
                    result.rows[name] = result.rows.get(name, 0) + len(table)
                    yield o.dataset_type, o.dataset_id, o.data_id, table

        load_tables(db_url, items())
        for name, errors in unreadable.items():
            result.warnings.append(
                f"catalog {name}: {len(errors)} dataset(s) could not be read as a table "
                f"and were skipped; first: {errors[0]}"
            )
