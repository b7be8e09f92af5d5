"""Validate's check of the site cache's root against the Butler repository (seed step 1).

A site cache rooted at the repository (or inside or above it) would make the
campaign's end-of-campaign eviction of "site copies" delete the repository's own
files; :mod:`skybatch.backbone.roots` has the rule, this applies it to ``site.root``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from skybatch.backbone.roots import describe_problem, repository_roots, resolve_root, root_problem

from . import checks
from .config import Campaign

if TYPE_CHECKING:
    from .crosschecks import CrossProblem

__all__ = ["site_root_problems"]


def site_root_problems(campaign: Campaign) -> Iterator[CrossProblem]:
    """``site.root`` equal to, inside or above the repository or its datastore root."""
    from .crosschecks import CrossProblem

    if campaign.site.root is None:
        return
    root = resolve_root(campaign.site.root)
    label = f"the site cache root of {campaign.site.name!r}"
    other = root_problem(label, root, repository_roots(campaign.repo))
    if other is not None:
        message, hint = describe_problem(label, root, other)
        yield CrossProblem(("site", "root"), checks.Invalid(message, hint))
