"""Text forms of campaign lists, status, reports and histories (``--json`` prints the
read models of :mod:`skybatch.read.campaigns` as JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skybatch.campaign.selection import StepSelection
    from skybatch.read.models import (
        CampaignEvent,
        CampaignInfo,
        CampaignReport,
        CampaignStatus,
        CampaignSummary,
        TaskCounts,
    )

__all__ = ["format_history", "format_list", "format_report", "format_status"]

_COLUMNS = ("expected", "succeeded", "failed", "running")

#: A step with more groups than this lists only those that did not succeed, at most
#: this many, after its groups per state (``--json`` lists every group).
MAX_GROUP_LINES = 20


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"


def _time(value: datetime) -> str:
    """``2026-12-06T20:01:35`` (UTC, to the second)."""
    return value.isoformat()[:19]


def format_list(campaigns: list[CampaignSummary]) -> str:
    if not campaigns:
        return "no campaigns; submit one with `skybatch campaign submit FILE`"
    lines = [f"{'id':>4}  {'name':<24} {'state':<10} {'created':<20} groups"]
    for c in campaigns:
        lines.append(
            f"{c.id:>4}  {c.name:<24} {c.state:<10} {_time(c.created):<20} {_counts(c.groups)}"
        )
    return "\n".join(lines)


def _header(data: CampaignInfo) -> list[str]:
    lines = [f"campaign {data.id} ({data.name}): {data.state}"]
    if data.message:
        lines.append(f"  {data.message}")
    if data.cleanup:
        lines.append(f"  {format_cleanup(data.cleanup.model_dump(exclude_none=True))}")
    return lines


def _selection_line(selection: StepSelection | None, message: str | None) -> str | None:
    """The selection's sentence, unless the step's message already says it."""
    if selection is None:
        return None
    text = selection.describe()
    return None if message and text in message else text


def format_status(data: CampaignStatus) -> str:
    lines = _header(data)
    for step in data.steps:
        lines.append(
            f"  step {step.name:<16} {step.state:<10} groups: {_counts(step.groups)}; "
            f"jobs: {_counts(step.jobs)}"
        )
        if step.overrides:
            lines.append(f"    retry overrides: {step.overrides}")
        if step.message:
            lines.append(f"    {step.message}")
        selection = _selection_line(step.selection, step.message)
        if selection:
            lines.append(f"    {selection}")
    return "\n".join(lines)


def _task_table(tasks: Mapping[str, TaskCounts], indent: str) -> list[str]:
    head = f"{indent}{'task':<16} " + " ".join(f"{c:>9}" for c in _COLUMNS)
    lines = [head + f" {'cpu h':>9} {'peak MB':>9}"]
    for label, counts in tasks.items():
        peak = counts.peak_memory_mb
        lines.append(
            f"{indent}{label:<16} "
            + " ".join(f"{getattr(counts, c):>9}" for c in _COLUMNS)
            + f" {counts.cpu_hours:>9.4f} {peak if peak is not None else '-':>9}"
        )
    return lines


def format_report(data: CampaignReport) -> str:
    lines = _header(data)
    for step in data.steps:
        lines.append("")
        lines.append(f"step {step.name}: {step.state}")
        if step.message:
            lines.append(f"  {step.message}")
        selection = _selection_line(step.selection, step.message)
        if selection:
            lines.append(f"  {selection}")
        groups = step.groups
        shown = groups
        if len(groups) > MAX_GROUP_LINES:
            lines.append(f"  {len(groups)} groups: {_counts(step.group_states)}")
            shown = [g for g in groups if g.state != "succeeded"]
        for group in shown[:MAX_GROUP_LINES]:
            total = group.total
            lines.append(
                f"  group {group.name}: {group.state} (run {group.run}, "
                f"{total.succeeded}/{total.expected} quanta succeeded)"
            )
            if group.state == "failed" and group.message:
                lines.append(f"    {group.message}")
        if len(shown) > MAX_GROUP_LINES:
            lines.append(
                f"  ... and {len(shown) - MAX_GROUP_LINES} more not succeeded; "
                f"`skybatch campaign report {data.id} --json` lists every group"
            )
        if step.tasks:
            lines.extend(_task_table(step.tasks, "  "))
    if data.tasks:
        lines.append("")
        lines.append("campaign total")
        lines.extend(_task_table(data.tasks, "  "))
    if data.failures:
        lines.append("")
        shown_n = len(data.failures)
        total_n = data.failures_total
        more = f", first {shown_n} shown" if shown_n < total_n else ""
        lines.append(f"failed jobs ({total_n}{more}):")
        for f in data.failures:
            lines.append(
                f"  {f.step}/{f.group} {f.job}: {f.state}, exit {f.exit_code} "
                f"({f.failure}), {f.attempts} attempt(s), memory {f.memory_mb} MB: "
                f"{f.error}"
            )
            if f.advice:
                lines.append(f"    what to do: {f.advice}")
    return "\n".join(lines)


def format_history(events: list[CampaignEvent]) -> str:
    lines = []
    for e in events:
        change = f"{e.from_state} -> {e.to_state}" if e.from_state else f"-> {e.to_state}"
        by = f"{e.actor}" + (f" ({e.action})" if e.action else "")
        reason = f": {e.reason}" if e.reason else ""
        lines.append(f"{_time(e.time)}  {e.kind:<8} {e.what:<28} {change:<22} {by}{reason}")
    return "\n".join(lines) or "no events"


def format_cleanup(summary: dict[str, Any]) -> str:
    """One line saying what was freed."""
    if not summary.get("targets"):
        return "cleanup: nothing (cleanup_at_end is false)"
    parts = []
    if "site" in summary:
        parts.append(
            f"{summary['evicted']} file(s), {_size(summary['evicted_bytes'])} evicted from "
            f"{summary['site']} ({summary['unpinned']} unpinned, {summary['kept_shared']} kept "
            f"for other campaigns, {summary['kept_last_copy']} kept as last copy)"
        )
    if "workdirs_removed" in summary:
        parts.append(
            f"{summary['workdirs_removed']} run workdir(s), {_size(summary['workdir_bytes'])} "
            "removed"
        )
    if "intermediates_removed" in summary:
        parts.append(f"{summary['intermediates_removed']} leftover intermediate dataset(s)")
    return "cleanup: " + ("; ".join(parts) or "nothing to free")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
