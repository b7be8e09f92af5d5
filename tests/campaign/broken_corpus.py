"""The broken-campaign corpus: campaign files that must be refused, and what they expect.

Each ``tests/campaign/data/broken/*.yaml`` is a complete campaign file that
``skybatch campaign validate`` and ``submit`` must refuse with exit status 2. Its first
lines are comments that say what the error must contain::

    # expect: steps[0].split.by: unknown dimension 'vist'
    # expect: did you mean 'visit'?
    # line_of: vist}

``expect`` (one or more): a substring of the error. ``line_of`` (optional): the error
must name ``FILE:LINE:COLUMN`` of the first place this text appears in the file below
the header; ``\\n`` in it stands for a line break. Pieces shared by several files
(``include: [parts/site.yaml]``) are in ``broken/parts/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BROKEN", "BrokenCampaign", "corpus"]

BROKEN = Path(__file__).parent / "data" / "broken"

_KEYS = ("expect", "line_of")


@dataclass(frozen=True)
class BrokenCampaign:
    """One corpus file: its path, text and what its error must say."""

    path: Path
    text: str
    expect: tuple[str, ...]
    line_of: str | None
    header_end: int  # offset of the first character after the header comments

    @classmethod
    def read(cls, path: Path) -> BrokenCampaign:
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        expect: list[str] = []
        line_of: str | None = None
        offset = 0
        for line in text.splitlines(keepends=True):
            stripped = line.strip()
            if not stripped.startswith("#"):
                break
            offset += len(line)
            key, sep, value = stripped[1:].strip().partition(":")
            if not sep or key.strip() not in _KEYS:
                continue  # a plain comment
            value = value.strip().replace("\\n", "\n")
            if key.strip() == "expect":
                expect.append(value)
            else:
                if line_of is not None:
                    raise ValueError(f"{path}: more than one '# line_of:'")
                line_of = value
        if not expect:
            raise ValueError(f"{path}: no '# expect:' line at the top")
        return cls(path, text, tuple(expect), line_of, offset)

    def place(self) -> tuple[int, int] | None:
        """1-based ``(line, column)`` of ``line_of`` below the header, if given."""
        if self.line_of is None:
            return None
        offset = self.text.find(self.line_of, self.header_end)
        if offset < 0:
            raise ValueError(f"{self.path}: line_of text {self.line_of!r} is not in the file")
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return line, column


def corpus() -> list[BrokenCampaign]:
    """Every corpus file, by name."""
    return [BrokenCampaign.read(p) for p in sorted(BROKEN.glob("*.yaml"))]
