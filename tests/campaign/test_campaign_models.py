"""The campaign models: what a loaded campaign holds, policy overrides, step graph."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from campaignworld import DEMO_CAMPAIGN, DEMO_PIPELINES
from pydantic import ValidationError

from skybatch.campaign import Campaign, CampaignConfigError, Policies, load_campaign
from skybatch.campaign.config import SplitByCount, SplitByDimension
from skybatch.campaign.steps import step_graph_problems, topological_order
from skybatch.errors import EXIT_USAGE, ConfigError
from skybatch.graph.workflow import ResourceRequest


@pytest.fixture
def demo(demo_env: Path) -> Campaign:
    return load_campaign(DEMO_CAMPAIGN)


def test_demo_campaign_contents(demo: Campaign, survey_dir: Path) -> None:
    assert demo.name == "demo-drp"
    assert demo.repo == survey_dir / "repo"
    assert demo.inputs == ["DemoCam/defaults"]
    assert demo.calibration is not None
    assert demo.calibration.collection == "DemoCam/calib"
    assert demo.calibration.valid_at == "latest"
    assert demo.refcat is not None
    assert demo.refcat.database == str(survey_dir / "refcat.sqlite")  # or a URL
    assert demo.refcat.dataset_type == "ref_cat"
    assert demo.site.name == "site:local"  # from the included site file
    assert demo.engine.name == "local"
    assert demo.engine.workers == 2  # ${DEMO_WORKERS:-2}, typed after substitution

    step1, step2 = demo.steps
    assert demo.ordered_steps() == [step1, step2]
    assert step1.pipeline_path == (DEMO_PIPELINES / "demo_drp.yaml").resolve()
    assert step1.task_labels == ["step1"]
    assert step1.pipeline_uri == f"{step1.pipeline_path}#step1"
    assert step1.split == SplitByDimension(by="visit")
    assert step2.task_labels == ["step2"]
    assert step2.pipeline_uri == f"{step2.pipeline_path}#step2"
    assert step2.split == "none"
    assert step2.depends_on == ["step1"]
    assert step2.select is not None
    assert (step2.select.from_step, step2.select.dataset_type) == ("step1", "visitSummary")
    assert step2.select.where == "psf_fwhm_arcsec < 1.6"


def test_the_select_column_is_a_visit_summary_column() -> None:
    from skybatch.demo.tasks.visit_summary import COLUMNS

    assert "psf_fwhm_arcsec" in COLUMNS


def test_step_policies_override_only_what_they_write(demo: Campaign) -> None:
    step1 = demo.policies_for("step1")
    # Campaign defaults kept ...
    assert step1.retries.max_attempts == 3
    assert step1.retries.memory_cap_mb == 8192
    assert step1.intermediates == ["postISRCCD"]
    # ... the included site file's limit merged with the step's own.
    assert step1.concurrency.max_running_jobs == 8
    assert step1.concurrency.max_running_groups == 4
    # Resources per label merge over the campaign's default resources.
    assert demo.resources_for("step1", "calibrate") == ResourceRequest(
        memory_mb=2048, cores=1, walltime_s=1800
    )
    assert demo.resources_for("step1", "isr") == ResourceRequest(
        memory_mb=1024, cores=1, walltime_s=1800
    )
    step2 = demo.policies_for(demo.step("step2"))
    assert step2.priority == 10
    assert step2.concurrency.max_running_groups is None
    assert demo.resources_for("step2", "coadd") == ResourceRequest(
        memory_mb=4096, cores=1, walltime_s=3600
    )
    assert demo.policies.cleanup_targets == ("site_cache", "workdirs")


def test_policy_overrides_are_recursive() -> None:
    base = Policies.model_validate(
        {"retries": {"max_attempts": 4, "memory_factor": 3.0}, "priority": 2}
    )
    override = Policies.model_validate({"retries": {"max_attempts": 1}, "cleanup_at_end": False})
    merged = base.overridden_by(override)
    assert merged.retries.max_attempts == 1
    assert merged.retries.memory_factor == 3.0
    assert merged.priority == 2
    assert merged.cleanup_targets == ()
    assert Policies().cleanup_targets == ("site_cache", "workdirs", "intermediates")


def test_queries_are_anded(demo: Campaign) -> None:
    assert demo.query_for("step2") == "instrument = 'DemoCam'"
    with_query = demo.model_copy(
        update={"steps": [demo.steps[0].model_copy(update={"query": "visit > 3"}), demo.steps[1]]}
    )
    assert with_query.query_for("step1") == "(instrument = 'DemoCam') AND (visit > 3)"


def test_models_validate_without_files_when_no_context_is_given() -> None:
    campaign = Campaign.model_validate(
        {
            "name": "c",
            "repo": "nowhere",
            "inputs": ["a"],
            "calibration": {"collection": "cal", "valid_at": "2026-03-01"},
            "steps": [
                {"name": "a", "pipeline": "p.yaml#x", "split": {"max_ids": 5, "dimension": "visit"}}
            ],
        }
    )
    assert campaign.repo == Path("nowhere")
    assert campaign.calibration is not None
    assert campaign.calibration.valid_at == date(2026, 3, 1)
    assert campaign.steps[0].split == SplitByCount(max_ids=5, dimension="visit")


def test_models_refuse_a_step_cycle() -> None:
    with pytest.raises(ValidationError, match="cycle: a -> b -> a"):
        Campaign.model_validate(
            {
                "name": "c",
                "repo": "r",
                "inputs": ["i"],
                "steps": [
                    {"name": "a", "pipeline": "p", "depends_on": ["b"]},
                    {"name": "b", "pipeline": "p", "depends_on": ["a"]},
                ],
            }
        )


def test_step_graph_problems_and_order() -> None:
    problems = step_graph_problems(
        [
            ("a", [], None),
            ("b", ["a", "a2"], "a"),
            ("c", ["c"], None),
            ("d", ["e"], "a"),
            ("e", ["d"], None),
        ]
    )
    assert [(p.path, p.message) for p in problems] == [
        (("steps", 1, "depends_on", 1), "unknown step 'a2'"),
        (("steps", 2, "depends_on", 0), "step 'c' depends on itself"),
        (("steps", 3, "depends_on"), "steps depend on each other in a cycle: d -> e -> d"),
        (
            ("steps", 3, "select", "from_step"),
            "step 'd' selects on the output of 'a' but does not depend on it",
        ),
    ]
    assert topological_order([("b", ["a"]), ("a", []), ("c", ["b", "a"])]) == ["a", "b", "c"]


def test_campaign_config_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.exit_code == EXIT_USAGE
    assert [(p.line, p.path) for p in error.problems] == [(1, "repo"), (1, "inputs"), (1, "steps")]
    assert all(p.hint for p in error.problems)
    assert "missing required field 'repo'" in str(error)


def test_site_root_filesystem_and_engine_settings_reach_the_run_options(
    campaign_dir: Path,
) -> None:
    from skybatch.campaign.execute import group_run_options

    sites = campaign_dir / "sites"
    sites.mkdir()
    # The site file is included from a subdirectory: its root is relative to it.
    (sites / "cluster.yaml").write_text(
        "site: {name: site:cluster, root: cache, shared_filesystem: false}\n"
        "engine: {name: local, settings: {isolation: process, worker_nice: '5'}}\n"
    )
    path = campaign_dir / "demo_campaign.yaml"
    path.write_text(
        path.read_text().replace(
            "include: [demo_site.yaml]", "include: [demo_site.yaml, sites/cluster.yaml]", 1
        )
    )

    campaign = load_campaign(path)

    assert campaign.site.name == "site:cluster"
    assert campaign.site.root == sites / "cache"
    assert campaign.site.shared_filesystem is False
    assert campaign.engine.settings == {"isolation": "process", "worker_nice": "5"}
    # As the manager reads it back after submit (no file is read again).
    stored = Campaign.model_validate(campaign.model_dump(mode="json", exclude_unset=True))
    assert stored == campaign
    options = group_run_options(
        stored, stored.steps[0], inputs=["DemoCam/defaults"], query="", run="c/1/step1/a"
    )
    assert options.site == "site:cluster"
    assert options.site_root == str(sites / "cache")
    assert options.shared_filesystem is False
    assert options.engine == "local"
    # Validated values, only those given; the included demo site's workers: 2 stays
    # the number of parallel jobs (capped by max_running_jobs: 8).
    assert options.engine_settings == {"isolation": "process", "worker_nice": 5}
    assert options.workers == 2


def test_other_engines_get_their_settings_and_no_workers(campaign_dir: Path) -> None:
    from skybatch.campaign.execute import group_run_options

    path = campaign_dir / "demo_campaign.yaml"
    path.write_text(
        path.read_text().replace(
            "include: [demo_site.yaml]",
            "include: [demo_site.yaml]\n"
            "engine: {name: slurm, settings: {partition: debug, pilot: {cores: 4}}}",
            1,
        )
    )
    campaign = load_campaign(path)
    options = group_run_options(
        campaign, campaign.steps[0], inputs=["DemoCam/defaults"], query="", run="c/1/step1/a"
    )
    assert options.engine == "slurm"
    assert options.engine_settings == {"partition": "debug", "pilot": {"cores": 4}}
    assert options.workers is None
    assert options.shared_filesystem is True and options.site_root is None
