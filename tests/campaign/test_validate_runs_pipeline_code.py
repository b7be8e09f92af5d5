"""``campaign validate`` loads pipelines as pipe_base does, which runs their
``config: python:`` blocks: the help and the README say so, and that campaign files
and pipelines are code to be trusted like code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from campaignworld import DEMO_PIPELINES, CampaignCli

from skybatch.cli.main import main

README = Path(__file__).parents[2] / "README.md"


def test_validate_runs_a_pipelines_config_python_block(
    campaign_dir: Path, campaign_cli: CampaignCli, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    pipelines = tmp_path / "pipelines"
    shutil.copytree(DEMO_PIPELINES, pipelines)
    pipeline = pipelines / "demo_drp.yaml"
    pipeline.write_text(
        pipeline.read_text().replace(
            "  isr: skybatch.demo.tasks.isr.IsrTask\n",
            "  isr:\n"
            "    class: skybatch.demo.tasks.isr.IsrTask\n"
            "    config:\n"
            "      python: |\n"
            f"        import pathlib; pathlib.Path({str(marker)!r}).touch()\n",
        )
    )
    path = campaign_dir / "demo_campaign.yaml"
    path.write_text(
        path.read_text().replace(
            "${DEMO_PIPELINES:-../../../src/skybatch/demo/pipelines}", str(pipelines)
        )
    )

    result = campaign_cli("validate", path)

    assert result.code == 0, result.err
    assert marker.exists()  # what the help and the README warn about


def test_validate_help_says_it_runs_pipeline_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "validate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "without running anything" not in text
    assert "config: python:" in text
    assert "Campaign files and pipelines are code" in text


def test_readme_says_campaigns_and_pipelines_are_code() -> None:
    text = " ".join(README.read_text().split())
    assert "without running anything" not in text
    assert "Campaign files and pipelines are code: trust them as you trust code." in text
    assert "runs the pipeline's `config: python:` blocks" in text
