"""The ``packages`` provenance dataset of a run (seed step 12): the environment's versions.

pipe_base writes ``packages`` with ``Packages.fromSystem()``, which lists the Python
modules the writing process happens to have imported: two groups of one campaign,
set up by one manager at different moments, recorded different lists. skybatch
records every distribution installed in the environment (plus conda and EUPS
packages, as ``lsst.utils`` finds them), which is the same for every run made with
one installation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["environment_packages", "write_packages"]


def environment_packages() -> Any:
    """``lsst.utils.packages.Packages`` of every installed distribution (cached by
    lsst.utils per process)."""
    from lsst.utils.packages import Packages

    return Packages.fromSystem(include_all=True)


def write_packages(qg: Any, butler: Any) -> None:
    """Write the run's ``packages`` init-output through the limited ``butler``.

    A resumed run that already has one keeps it when the versions agree (new names are
    added, as pipe_base does) and is refused (ConflictingDefinitionError) when a
    version changed: the run's outputs would not come from one environment.
    """
    from lsst.pipe.base.pipeline_graph import compare_packages

    new_packages = environment_packages()
    (ref,) = qg.get_init_outputs("").values()
    try:
        existing = butler.get(ref)
    except (LookupError, FileNotFoundError):
        existing = None
    if existing is None:
        butler.put(new_packages, ref)
    elif compare_packages(existing, new_packages):
        butler.pruneDatasets([ref], unstore=True, purge=True)
        butler.put(existing, ref)
