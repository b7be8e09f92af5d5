"""Campaign files that would hang or crash a YAML reader or a recursive graph walk are
answered like any invalid file: exit 2, the place in the file, what to do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from campaignworld import DEMO_PIPELINES, CampaignCli

from skybatch import limits
from skybatch.campaign.steps import step_graph_problems, topological_order
from skybatch.campaign.yamlguard import YamlLimitError, compose

HEAD = """\
include: [site.yaml]
name: many-steps
repo: ${DEMO_SURVEY}/repo
inputs: [DemoCam/defaults]
calibration: {collection: DemoCam/calib}
steps:
"""
PIPELINE = f'"{DEMO_PIPELINES}/demo_drp.yaml#step1"'


@pytest.fixture
def files(tmp_path: Path, demo_env: Path) -> Path:
    target = tmp_path / "campaigns"
    target.mkdir()
    (target / "site.yaml").write_text("site: {name: 'site:local'}\nengine: {name: local}\n")
    return target


def _chain(count: int, last_depends_on: str | None = None) -> str:
    """``count`` steps, each depending on the one before, written last first."""
    lines = []
    for i in range(count, 0, -1):
        depends = f"s{i - 1}" if i > 1 else ""
        if i == count and last_depends_on is not None:
            depends = last_depends_on
        pipeline = f"&p {PIPELINE}" if i == count else "*p"
        lines.append(f"  - {{name: s{i}, pipeline: {pipeline}, depends_on: [{depends}]}}")
    return HEAD + "\n".join(lines) + "\n"


def test_a_3000_step_chain_in_reverse_order_is_valid_and_ordered(
    files: Path, campaign_cli: CampaignCli
) -> None:
    path = files / "chain.yaml"
    path.write_text(_chain(3000))
    result = campaign_cli("validate", path)
    assert result.code == 0, result.err
    assert "valid campaign many-steps with 3000 steps" in result.out

    order = topological_order(
        [(f"s{i}", [f"s{i - 1}"] if i > 1 else []) for i in range(3000, 0, -1)]
    )
    assert order == [f"s{i}" for i in range(1, 3001)]


def test_a_long_cycle_is_reported_once_with_a_bounded_list() -> None:
    count = 5000
    steps = [(f"s{i}", [f"s{i % count + 1}"], None) for i in range(count, 0, -1)]
    problems = step_graph_problems(steps)
    assert len(problems) == 1
    assert problems[0].path == ("steps", 0, "depends_on")
    assert problems[0].message.startswith("steps depend on each other in a cycle: s5000 -> s1")
    assert f"… and {count + 1 - limits.MAX_HINT_NAMES:,} more" in problems[0].message


def test_the_hint_of_a_5000_step_file_is_bounded(files: Path, campaign_cli: CampaignCli) -> None:
    path = files / "many.yaml"
    path.write_text(_chain(5000, last_depends_on="nosuch"))
    result = campaign_cli("validate", path)
    assert result.code == 2
    assert re.search(
        rf"{re.escape(str(path))}:\d+:\d+: steps\[0\]\.depends_on\[0\]: unknown step 'nosuch'",
        result.err,
    )
    assert "use one of: s4999, s4998" in result.err
    assert "… and 4,989 more" in result.err
    assert max(len(line) for line in result.err.splitlines()) < 400


def test_a_file_with_many_problems_prints_a_bounded_list(
    files: Path, campaign_cli: CampaignCli
) -> None:
    path = files / "bad.yaml"
    lines = [f"  - {{name: s{i}, pipeline: {PIPELINE}, depends_on: [x{i}]}}" for i in range(300)]
    path.write_text(HEAD + "\n".join(lines) + "\n")
    result = campaign_cli("validate", path)
    assert result.code == 2
    assert result.err.startswith(f"error: {path} is not a valid campaign (300 problems):")
    assert result.err.rstrip().endswith(f"… and {300 - limits.MAX_PROBLEMS_SHOWN} more problems")


@pytest.mark.parametrize(
    ("text", "message", "place"),
    [
        ("a: " + "[" * 5000 + "]" * 5000, "values are nested more than 64 levels", (1, 3 + 64)),
        ("a: &x [1, *x]", "alias *x is inside the value it names", (1, 11)),
        ("a: &x\n  b: 1\n  <<: *x\n", "alias *x is inside the value it names", (3, 7)),
    ],
    ids=["deep", "recursive alias", "recursive merge key"],
)
def test_the_reader_refuses_what_cannot_be_built(
    text: str, message: str, place: tuple[int, int], files: Path, campaign_cli: CampaignCli
) -> None:
    with pytest.raises(YamlLimitError, match=re.escape(message)) as caught:
        compose(text)
    assert (caught.value.mark.line + 1, caught.value.mark.column + 1) == place

    path = files / "bad.yaml"
    path.write_text(text)
    result = campaign_cli("validate", path)
    assert result.code == 2
    assert f"{path}:{place[0]}:{place[1]}: {message}" in result.err


def test_aliases_are_counted_and_their_expansion_is_bounded() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    assert compose(text)[0] is not None
    with pytest.raises(YamlLimitError, match="more than 2 aliases"):
        compose(text, max_aliases=2)
    with pytest.raises(YamlLimitError, match="more than 12 values once its aliases"):
        compose(text, max_nodes=12)
    laughs = 'l0: &l0 "lol"\n' + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    with pytest.raises(YamlLimitError, match="once its aliases are expanded"):
        compose(laughs)


def test_libyaml_and_pyyaml_read_the_same_nodes() -> None:
    """The fast reader (libyaml events) gives what PyYAML's own reader gives."""
    text = "a: 1\nb: 'x'\nc: [1, two, {d: null}]\ne: |\n  text\n"
    node, loader = compose(text)
    plain = yaml.SafeLoader(text)
    try:
        expected = plain.get_single_node()
    finally:
        plain.dispose()
    assert loader.construct_document(node) == plain.construct_document(expected)
    styles = [(k.value, getattr(v, "style", "")) for k, v in node.value]
    assert styles == [(k.value, getattr(v, "style", "")) for k, v in expected.value]


def test_a_file_larger_than_the_limit_is_not_read(files: Path, campaign_cli: CampaignCli) -> None:
    path = files / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(limits.MAX_CAMPAIGN_FILE_BYTES + 1)
    result = campaign_cli("validate", path)
    assert result.code == 2
    assert f"{path}: the file is {limits.MAX_CAMPAIGN_FILE_BYTES + 1:,} bytes" in result.err


def test_many_steps_selecting_on_one_steps_output_are_checked_once() -> None:
    """Each of 20,000 chained steps selects on the first one's output: one walk of the
    graph, not one per step (which would be 200 million steps' worth)."""
    count = 20_000
    steps = [
        (f"s{i}", [f"s{i - 1}"] if i > 1 else [], "s1" if i > 1 else None)
        for i in range(1, count + 1)
    ]
    assert step_graph_problems(steps) == []
    steps[-1] = (f"s{count}", [], "s1")
    problems = step_graph_problems(steps)
    assert [p.path for p in problems] == [("steps", count - 1, "select", "from_step")]
