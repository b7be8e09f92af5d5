"""``skybatch campaign validate``: the demo campaign passes; broken variants of it fail
with exit code 2, naming the file, line, column and field, and touch no database."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from campaignworld import DEMO_CAMPAIGN, CampaignCli


def test_demo_campaign_is_valid(demo_env: Path, campaign_cli: CampaignCli) -> None:
    result = campaign_cli("validate", DEMO_CAMPAIGN)
    assert result.code == 0, result.err
    assert result.out == f"{DEMO_CAMPAIGN}: valid campaign demo-drp with 2 steps (step1, step2)\n"
    campaign_cli.assert_no_database()


@dataclass(frozen=True)
class Broken:
    """A change to the demo campaign and what the error must say.

    ``old`` is replaced by ``new`` in the campaign file. The error must contain every
    string of ``expect``; if ``line_of`` is given, the problem must be reported at the
    line (and column) where that text is in the changed file.
    """

    old: str
    new: str
    expect: tuple[str, ...]
    line_of: str | None = None
    file: str = "demo_campaign.yaml"
    unset: tuple[str, ...] = field(default=())


PIPELINE1 = "${DEMO_PIPELINES:-../../../src/skybatch/demo/pipelines}/demo_drp.yaml#step1"

CASES: dict[str, Broken] = {
    "yaml syntax": Broken(
        "inputs: [DemoCam/defaults]",
        "inputs: [DemoCam/defaults\nbroken: here",
        ("invalid YAML: while parsing a flow sequence (from line", "but got ':'"),
        line_of=": here",
    ),
    "unknown top-level field": Broken(
        "name: demo-drp",
        "name: demo-drp\ncolour: blue",
        ("colour: unknown field 'colour'", "fields allowed here: schema_version, name"),
        line_of="colour: blue",
    ),
    "unknown step field": Broken(
        "    split: {by: visit}",
        "    split: {by: visit}\n    retry: 3",
        ("steps[0].retry: unknown field 'retry'", "fields allowed here: name, description"),
        line_of="retry: 3",
    ),
    "missing pipeline file": Broken(
        PIPELINE1,
        "no_such_pipeline.yaml#step1",
        ("steps[0].pipeline: pipeline file", "no_such_pipeline.yaml does not exist"),
        line_of="no_such_pipeline.yaml#step1",
    ),
    "unknown label subset": Broken(
        "demo_drp.yaml#step1",
        "demo_drp.yaml#step1,stepp2",
        (
            "steps[0].pipeline: pipeline demo_drp.yaml has no task or subset 'stepp2'",
            "did you mean 'step2'?",
        ),
        line_of="${DEMO_PIPELINES:-../../../src/skybatch/demo/pipelines}/demo_drp.yaml#step1,",
    ),
    "unknown label in labels list": Broken(
        "labels: [step2]",
        "labels: [coad]",
        (
            "steps[1].labels: pipeline demo_drp.yaml has no task or subset 'coad'",
            "did you mean 'coadd'?",
        ),
        line_of="[coad]",
    ),
    "cyclic dependencies": Broken(
        "    split: {by: visit}",
        "    split: {by: visit}\n    depends_on: [step2]",
        ("steps[0].depends_on: steps depend on each other in a cycle: step1 -> step2 -> step1",),
        line_of="[step2]",
    ),
    "depends on an unknown step": Broken(
        "depends_on: [step1]",
        "depends_on: [step1, stepone]",
        ("steps[1].depends_on[1]: unknown step 'stepone'", "use one of: step1"),
        line_of="stepone]",
    ),
    "duplicate step names": Broken(
        "  - name: step2",
        "  - name: step1",
        ("steps[1].name: duplicate step name 'step1' (also steps[0])",),
        line_of="step1\n    description: Coadds",
    ),
    "template not a FileTemplate": Broken(
        '"{run}/{datasetType}/{band}/{datasetType}_{instrument}_{visit}_{run}"',
        '"{run}/{datasetType}/{visit"',
        ("file_templates.visitSummary: invalid file template", "expected '}'"),
        line_of='"{run}/{datasetType}/{visit"',
    ),
    "template without a unique field": Broken(
        '"{run}/{datasetType}/{band}/{datasetType}_{instrument}_{visit}_{run}"',
        '"summaries/{datasetType}/{visit}"',
        ("file_templates.visitSummary: invalid file template", "missing a mandatory field"),
        line_of='"summaries/{datasetType}/{visit}"',
    ),
    "template that is not unique across dataset types": Broken(
        '"{run}/{datasetType}/{band}/{datasetType}_{instrument}_{visit}_{run}"',
        '"{run}/{band}/{visit}"',
        ("file_templates.visitSummary:", "does not name files uniquely"),
        line_of='"{run}/{band}/{visit}"',
    ),
    "template missing a dimension of its dataset type": Broken(
        '"{run}/{datasetType}/{band}/{datasetType}_{instrument}_{visit}_{run}"',
        '"{run}/{datasetType}/{band}/{datasetType}_{instrument}"',
        (
            "file_templates.visitSummary: file template",
            "cannot name every visitSummary uniquely",
            "use every dimension of visitSummary in the template: instrument, visit",
        ),
        line_of='"{run}/{datasetType}/{band}/{datasetType}_{instrument}"',
    ),
    "template for a dataset type no step writes": Broken(
        "  visitSummary:",
        "  visitSumary:",
        (
            "file_templates.visitSumary: no step writes dataset type 'visitSumary'",
            "did you mean 'visitSummary'?",
        ),
        line_of="visitSumary:",
    ),
    "bad data query syntax": Broken(
        "query: \"instrument = 'DemoCam'\"",
        "query: \"instrument = = 'DemoCam'\"",
        ("query: invalid data query", "Syntax error at or near '='"),
        line_of="\"instrument = = 'DemoCam'\"",
    ),
    "bad select condition": Broken(
        'where: "psf_fwhm_arcsec < 1.6"',
        'where: "psf_fwhm_arcsec <"',
        ("steps[1].select.where: invalid condition",),
        line_of='"psf_fwhm_arcsec <"',
    ),
    "split by an unknown dimension": Broken(
        "split: {by: visit}",
        "split: {by: vist}",
        ("steps[0].split.by: unknown dimension 'vist'", "did you mean 'visit'?"),
        line_of="vist}",
    ),
    "max_ids below 1": Broken(
        "split: {by: visit}",
        "split: {max_ids: 0, dimension: visit}",
        ("steps[0].split.max_ids: input should be greater than or equal to 1, got 0",),
        line_of="0, dimension",
    ),
    "split neither by nor max_ids": Broken(
        "split: {by: visit}",
        "split: visit",
        ("steps[0].split: expected none, {by: DIMENSION} or {max_ids: N, dimension: DIMENSION}",),
        line_of="visit\n    policies",
    ),
    "negative memory": Broken(
        "calibrate: {memory_mb: 2048}",
        "calibrate: {memory_mb: -2048}",
        ("steps[0].policies.resources.calibrate.memory_mb: input should be greater than 0",),
        line_of="-2048",
    ),
    "unset variable without default": Broken(
        "name: demo-drp",
        "name: ${CAMPAIGN_TEST_NAME}",
        (
            "name: environment variable CAMPAIGN_TEST_NAME is not set",
            "${CAMPAIGN_TEST_NAME:-value}",
        ),
        line_of="${CAMPAIGN_TEST_NAME}",
        unset=("CAMPAIGN_TEST_NAME",),
    ),
    "include of a missing file": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml, no_such_site.yaml]",
        ("include[1]: included file no_such_site.yaml does not exist",),
        line_of="no_such_site.yaml",
    ),
    "string where a list is expected": Broken(
        "inputs: [DemoCam/defaults]",
        "inputs: DemoCam/defaults",
        ("inputs: input should be a valid list, got 'DemoCam/defaults'",),
        line_of="DemoCam/defaults",
    ),
    "calibration date not a date": Broken(
        "valid_at: latest",
        "valid_at: 2026-02-30",
        ("calibration.valid_at: '2026-02-30' is not a date", "YYYY-MM-DD"),
        line_of="2026-02-30",
    ),
    "repository without butler.yaml": Broken(
        "repo: ${DEMO_SURVEY:-demo-survey}/repo",
        "repo: ${DEMO_SURVEY:-demo-survey}",
        ("repo:", "is not a Butler repository (it has no butler.yaml)"),
        line_of="${DEMO_SURVEY:-demo-survey}\n",
    ),
    "select on a dataset type the step does not make": Broken(
        "dataset_type: visitSummary",
        "dataset_type: visitSumary",
        (
            "steps[1].select.dataset_type: step 'step1' does not produce 'visitSumary'",
            "did you mean 'visitSummary'?",
        ),
        line_of="visitSumary",
    ),
    "select from a step it does not depend on": Broken(
        "depends_on: [step1]",
        "depends_on: []",
        (
            "steps[1].select.from_step: step 'step2' selects on the output of 'step1' but does "
            "not depend on it",
        ),
        line_of="step1\n      dataset_type",
    ),
    "duplicate key": Broken(
        "    labels: [step2]",
        "    labels: [step2]\n    labels: [coadd]",
        ("steps[1].labels: duplicate key 'labels'",),
        line_of="labels: [coadd]",
    ),
    "unknown engine in the included site file": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nengine: {name: slurmm}",
        ("engine.name: unknown engine 'slurmm'", "use one of the installed engines: local"),
        line_of="slurmm",
    ),
    "engine setting out of range": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nengine: {name: local, settings: {max_workers: 0}}",
        (
            "engine.settings.max_workers: input should be greater than or equal to 1, got 0",
            "fix the value (max_workers: jobs running at once",
        ),
        line_of="0}}",
    ),
    "unknown engine setting": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nengine:\n  settings:\n    isolatoin: process",
        (
            "engine.settings.isolatoin: unknown field 'isolatoin'",
            "did you mean 'isolation'? fields allowed here: max_workers, isolation",
        ),
        line_of="isolatoin",
    ),
    "engine workers given twice": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nengine: {settings: {max_workers: 4}}",
        ("engine: the local engine's parallel jobs are given twice", "keep one of them"),
        line_of="{settings: {max_workers: 4}}",
    ),
    "site root that is a file": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nsite: {root: demo_site.yaml, shared_filesystem: false}",
        ("site.root: site root", "demo_site.yaml is not a directory"),
        line_of="demo_site.yaml, shared",
    ),
    "site shared_filesystem not a boolean": Broken(
        "include: [demo_site.yaml]",
        "include: [demo_site.yaml]\nsite: {shared_filesystem: sometimes}",
        ("site.shared_filesystem: input should be a valid boolean",),
        line_of="sometimes",
    ),
}


def _column(text: str, snippet: str) -> tuple[int, int]:
    offset = text.index(snippet)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_broken_campaign_is_reported_where_it_is_wrong(
    case: Broken,
    campaign_dir: Path,
    campaign_cli: CampaignCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in case.unset:
        monkeypatch.delenv(name, raising=False)
    path = campaign_dir / "demo_campaign.yaml"
    original = path.read_text()
    assert original.count(case.old) >= 1, case.old
    text = original.replace(case.old, case.new, 1)
    path.write_text(text)

    result = campaign_cli("validate", path)

    assert result.code == 2, result.out
    assert result.out == ""
    err = result.err
    assert err.startswith("error: ")
    for expected in case.expect:
        assert expected in err, f"{expected!r} not in:\n{err}"
    if case.line_of is not None:
        line, column = _column(text, case.line_of)
        places = re.findall(rf"{re.escape(str(path))}:(\d+):(\d+): ", err)
        assert (str(line), str(column)) in places, f"expected {line}:{column} in:\n{err}"
    campaign_cli.assert_no_database()


def test_every_problem_of_a_file_is_reported_at_once(
    campaign_dir: Path, campaign_cli: CampaignCli
) -> None:
    path = campaign_dir / "demo_campaign.yaml"
    text = path.read_text()
    for old, new in [
        ("name: demo-drp", "name: demo-drp\ncolour: blue"),
        ("split: {by: visit}", "split: {by: vist}"),
        ("depends_on: [step1]", "depends_on: [step1, step3]"),
        ("valid_at: latest", "valid_at: someday"),
        ("calibrate: {memory_mb: 2048}", "calibrate: {memory_mb: 0}"),
    ]:
        text = text.replace(old, new, 1)
    path.write_text(text)

    result = campaign_cli("validate", path)

    assert result.code == 2
    lines = result.err.splitlines()
    assert lines[0] == f"error: {path} is not a valid campaign (5 problems):"
    reported = [
        re.match(rf"  {re.escape(str(path))}:(\d+):\d+: (\S+): ", line) for line in lines[1:]
    ]
    assert all(reported), result.err
    assert [m.group(2) for m in reported if m] == [
        "colour",
        "calibration.valid_at",
        "steps[0].split.by",
        "steps[0].policies.resources.calibrate.memory_mb",
        "steps[1].depends_on[1]",
    ]
    line_numbers = [int(m.group(1)) for m in reported if m]
    assert line_numbers == sorted(line_numbers)
    campaign_cli.assert_no_database()


def test_an_error_in_an_included_file_names_that_file(
    campaign_dir: Path, campaign_cli: CampaignCli
) -> None:
    site = campaign_dir / "demo_site.yaml"
    site.write_text(site.read_text().replace("name: site:local", "name: local"))

    result = campaign_cli("validate", campaign_dir / "demo_campaign.yaml")

    assert result.code == 2
    line, column = _column(site.read_text(), "local\n")
    assert f"{site}:{line}:{column}: site.name: invalid site 'local'" in result.err


def test_a_missing_campaign_file_exits_2(campaign_cli: CampaignCli, tmp_path: Path) -> None:
    result = campaign_cli("validate", tmp_path / "nope.yaml")
    assert result.code == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in result.err
    campaign_cli.assert_no_database()
