"""Errors of campaign files: every problem with its file, line, column and field path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from skybatch import limits
from skybatch.errors import ConfigError

__all__ = ["CampaignConfigError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a campaign file.

    Attributes:
        file: The file the problem is in (the campaign file or one it includes).
        line: 1-based line, or ``None`` when the problem is about the whole file.
        column: 1-based column, or ``None`` if unknown.
        path: Field path inside the campaign (``steps[1].split.by``); ``""`` for the
            document itself.
        message: What is wrong.
        hint: What to do about it.
    """

    file: Path
    line: int | None
    column: int | None
    path: str
    message: str
    hint: str | None = None

    @property
    def place(self) -> str:
        """``file:line:column`` (as far as known), the form editors jump to."""
        text = str(self.file)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text

    def __str__(self) -> str:
        text = f"{self.place}: "
        if self.path:
            text += f"{self.path}: "
        text += _one_line(self.message)
        if self.hint:
            text += f". {_one_line(self.hint)}"
        return text


def _one_line(text: str) -> str:
    """``text`` on one line (messages quoted from other tools may span several)."""
    return " ".join(text.split())


class CampaignConfigError(ConfigError):
    """A campaign file is invalid; :attr:`problems` lists everything found, in file order.

    ``str()`` gives one problem per line, each starting with ``file:line:column:`` and
    the field path, so the whole report can be read (or jumped through) at once.
    """

    def __init__(self, file: Path, problems: Sequence[Problem]):
        if not problems:
            raise ValueError("CampaignConfigError needs at least one problem")
        self.file = Path(file)
        self.problems = list(problems)
        first = self.problems[0]
        if len(self.problems) == 1:
            message = f"invalid campaign: {first.message}"
        else:
            message = f"invalid campaign file {file} ({len(self.problems)} problems)"
        super().__init__(message, where=first.place, hint=first.hint)

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{self.file} is not a valid campaign ({len(self.problems)} problems):"]
        shown = self.problems[: limits.MAX_PROBLEMS_SHOWN]
        lines += [f"  {problem}" for problem in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  … and {len(self.problems) - len(shown):,} more problems")
        return "\n".join(lines)
