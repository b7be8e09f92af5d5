"""The published JSON schema of campaign files, and the CLI that writes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from campaignworld import CampaignCli

from skybatch.campaign.schema import SCHEMA_PATH, campaign_json_schema, schema_text

REGENERATE = f"skybatch campaign schema --output {SCHEMA_PATH}"


def test_published_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), f"regenerate it: {REGENERATE}"


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


def test_schema_forbids_unknown_fields_everywhere() -> None:
    schema = campaign_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "include" in schema["properties"]
    assert set(schema["required"]) == {"name", "repo", "inputs", "steps"}
    objects = _objects(schema)
    assert len(objects) >= 10
    assert all(o.get("additionalProperties") is False for o in objects)


def test_schema_command_prints_and_writes(campaign_cli: CampaignCli, tmp_path: Path) -> None:
    printed = campaign_cli("schema")
    assert printed.code == 0, printed.err
    assert json.loads(printed.out) == campaign_json_schema()
    target = tmp_path / "campaign.schema.json"
    written = campaign_cli("schema", "--output", target)
    assert written.code == 0, written.err
    assert target.read_text() == schema_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    failed = campaign_cli("schema", "--output", tmp_path / "no" / "such" / "dir" / "s.json")
    assert failed.code == 2
    assert "cannot write the schema" in failed.err


def test_help_does_not_import_the_campaign_models() -> None:
    code = (
        "import sys\n"
        "from skybatch.cli.main import main\n"
        "rc = main(['campaign', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('skybatch.campaign', 'lsst'))))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
