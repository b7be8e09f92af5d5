"""Reading campaign YAML: line marks, ${VAR} substitution, includes and deep merge."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from skybatch.campaign.source import Mark, SourceError, format_path, read_source


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SourceError) as info:
        read_source(path, environ or {})
    return [str(p) for p in info.value.problems]


def test_marks_point_at_keys_and_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "name: x\nsteps:\n  - name: a\n    split: {by: visit}\n")
    data, source = read_source(path, {})
    assert data == {"name": "x", "steps": [{"name": "a", "split": {"by": "visit"}}]}
    assert source.key_mark(("steps", 0, "split", "by")) == Mark(path, 4, 13)
    assert source.value_mark(("steps", 0, "split", "by")) == Mark(path, 4, 17)
    assert source.value_mark(("steps", 0)) == Mark(path, 3, 5)
    # A field that is not written: its nearest written parent.
    assert source.value_mark(("steps", 0, "depends_on")) == Mark(path, 3, 5)


def test_variables_are_substituted_and_typed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "a: ${N}\nb: ${M:-7}\nc: '${N}'\nd: x-${N}-$${N}\ne: ${DAY:-2026-03-01}\n"
        "# ${IN_A_COMMENT}\n",
    )
    data, _ = read_source(path, {"N": "3"})
    assert data == {"a": 3, "b": 7, "c": "3", "d": "x-3-${N}", "e": date(2026, 3, 1)}


def test_unset_variables_are_all_reported_with_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "a: ${ONE}\nb:\n  - 'x ${TWO}'\n")
    assert _problems(path) == [
        f"{path}:1:4: a: environment variable ONE is not set. set ONE, or give a default as "
        "${ONE:-value}",
        f"{path}:3:8: b[0]: environment variable TWO is not set. set TWO, or give a default as "
        "${TWO:-value}",
    ]


def test_includes_merge_deeply_and_the_including_file_wins(tmp_path: Path) -> None:
    _write(
        tmp_path / "shared" / "site.yaml",
        "site: {name: site:cluster}\nengine: {name: local, workers: 8}\n"
        "policies: {priority: 1, retries: {max_attempts: 5}}\nsteps: [{name: from_site}]\n",
    )
    path = _write(
        tmp_path / "c.yaml",
        "include: [shared/site.yaml]\nengine: {workers: 2}\npolicies: {priority: 3}\n"
        "steps: [{name: mine}]\n",
    )
    data, source = read_source(path, {})
    assert data == {
        "site": {"name": "site:cluster"},
        "engine": {"name": "local", "workers": 2},
        "policies": {"priority": 3, "retries": {"max_attempts": 5}},
        "steps": [{"name": "mine"}],  # lists are replaced, not concatenated
    }
    site = tmp_path / "shared" / "site.yaml"
    assert source.value_mark(("engine", "name")).file == site
    assert source.value_mark(("engine", "workers")) == Mark(path, 2, 19)
    assert source.value_mark(("policies", "retries", "max_attempts")).file == site
    assert source.value_mark(("steps", 0, "name")) == Mark(path, 4, 16)


def test_relative_paths_in_an_included_file_are_relative_to_it(
    tmp_path: Path, survey_dir: Path
) -> None:
    from skybatch.campaign import load_campaign

    pipelines = Path(__file__).parents[2] / "src" / "skybatch" / "demo" / "pipelines"
    shared = tmp_path / "shared"
    (shared / "pipelines").mkdir(parents=True)
    (shared / "pipelines" / "drp.yaml").write_text((pipelines / "demo_drp.yaml").read_text())
    (shared / "repo").symlink_to(survey_dir / "repo")
    _write(
        shared / "base.yaml",
        "repo: repo\ninputs: [DemoCam/defaults]\n"
        "steps: [{name: step1, pipeline: pipelines/drp.yaml#step1}]\n",
    )
    path = _write(tmp_path / "campaigns" / "c.yaml", "include: [../shared/base.yaml]\nname: c\n")
    campaign = load_campaign(path, {})
    assert campaign.repo == shared / "repo"
    assert campaign.steps[0].pipeline_path == shared / "pipelines" / "drp.yaml"


def test_yaml_errors_give_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "name: x\nsteps:\n  - name: a\n   pipeline: p\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:4:4: invalid YAML: while parsing a block collection")
    path = _write(tmp_path / "d.yaml", "inputs: [a, b\nname: x\n")
    (problem,) = _problems(path)
    assert "while parsing a flow sequence (from line 1, column 9)" in problem


def test_duplicate_keys_are_reported_but_yaml_merge_keys_are_fine(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml",
        "base: &base {memory_mb: 1, cores: 2}\nresources:\n  a: {<<: *base, cores: 4}\n"
        "name: x\nname: y\n",
    )
    assert _problems(path) == [
        f"{path}:5:1: name: duplicate key 'name' (also on line 4). keep one of them"
    ]
    path.write_text(path.read_text().replace("name: y\n", ""))
    data, _ = read_source(path, {})
    assert data["resources"] == {"a": {"memory_mb": 1, "cores": 4}}


def test_include_problems(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", "include: [b.yaml]\n")
    _write(tmp_path / "b.yaml", "include: [a.yaml, missing.yaml]\n")
    problems = _problems(a)
    assert problems[0].startswith(f"{tmp_path / 'b.yaml'}:1:11: include[0]: include cycle: ")
    assert problems[1].startswith(
        f"{tmp_path / 'b.yaml'}:1:19: include[1]: included file missing.yaml does not exist"
    )
    c = _write(tmp_path / "c.yaml", "include: site.yaml\n")
    assert _problems(c) == [
        f"{c}:1:10: include: include must be a list of file names. write e.g. "
        "`include: [site.yaml]`"
    ]


def test_format_path() -> None:
    assert format_path(("steps", 1, "split", "by")) == "steps[1].split.by"
    assert format_path(("file_templates", "calexp.wcs")) == "file_templates['calexp.wcs']"
    assert format_path(()) == ""
