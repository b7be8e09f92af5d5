"""A dynamic step's selection as data (kept and dropped data ids, the condition),
not a sentence that readers parse back.

``campaign_steps.selection`` becomes a JSON column holding
:class:`skybatch.campaign.selection.StepSelection`. Existing sentences (``selected 2
of 3 visitSummary of step1 where ... (all rows): kept visit=1000, ...; dropped ...``,
possibly after ``nothing selected: ``) are converted; a text this revision cannot
read becomes NULL (the step's ``message`` keeps the same sentence). Downgrading writes
the sentence back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The sentence revisions up to 0006 stored (skybatch.campaign.expansion then).
_SENTENCE = re.compile(
    r"^(?:nothing selected: )?selected \d+ of \d+ (?P<dataset_type>\S+) of (?P<from_step>\S+) "
    r"where (?P<where>.*) \((?P<match>all|any) rows\): kept (?P<kept>.*); dropped (?P<dropped>.*)$",
    flags=re.S,
)


def _value(text: str) -> Any:
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _data_ids(text: str) -> list[dict[str, Any]]:
    if text.strip() == "none":
        return []
    out = []
    for item in text.split(", "):
        pairs = [part.split("=", 1) for part in item.strip().split(",")]
        out.append({k: _value(v) for k, v in pairs})
    return out


def parse_sentence(text: str) -> dict[str, Any] | None:
    """The structured selection of a stored sentence, or None if it is not one."""
    found = _SENTENCE.match(text.strip())
    if found is None:
        return None
    try:
        kept, dropped = _data_ids(found["kept"]), _data_ids(found["dropped"])
    except ValueError:  # an item without "=": not a list of data ids
        return None
    condition = {k: found[k] for k in ("from_step", "dataset_type", "where", "match")}
    return {"condition": condition, "kept": kept, "dropped": dropped}


def _sentence(data: dict[str, Any]) -> str:
    c = data["condition"]

    def ids(items: list[dict[str, Any]]) -> str:
        return ", ".join(",".join(f"{k}={v}" for k, v in d.items()) for d in items) or "none"

    kept, dropped = data.get("kept", []), data.get("dropped", [])
    return (
        f"selected {len(kept)} of {len(kept) + len(dropped)} {c['dataset_type']} of "
        f"{c['from_step']} where {c['where']} ({c['match']} rows): kept {ids(kept)}; "
        f"dropped {ids(dropped)}"
    )


def _convert(source: sa.types.TypeEngine[Any], target: sa.types.TypeEngine[Any], how: Any) -> None:
    """Copy ``selection`` through ``how`` into a new column of type ``target``."""
    with op.batch_alter_table("campaign_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("selection_new", target, nullable=True))
    steps = sa.table(
        "campaign_steps",
        sa.column("id", sa.Integer),
        sa.column("selection", source),
        sa.column("selection_new", target),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(steps.c.id, steps.c.selection).where(steps.c.selection.is_not(None))
    ).all()
    for step_id, value in rows:
        connection.execute(
            steps.update().where(steps.c.id == step_id).values(selection_new=how(value))
        )
    with op.batch_alter_table("campaign_steps", schema=None) as batch_op:
        batch_op.drop_column("selection")
    with op.batch_alter_table("campaign_steps", schema=None) as batch_op:
        batch_op.alter_column(
            "selection_new", new_column_name="selection", existing_type=target, nullable=True
        )


def upgrade() -> None:
    _convert(sa.Text(), sa.JSON(), parse_sentence)


def downgrade() -> None:
    def sentence(value: Any) -> str | None:
        data = json.loads(value) if isinstance(value, str) else value
        return None if data is None else _sentence(data)

    _convert(sa.JSON(), sa.Text(), sentence)
