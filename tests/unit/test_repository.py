"""Butler repositories named as the Butler names them (skybatch.repository): a directory,
a butler.yaml path or file:// URI, a repository index label; the datastore root as the
Butler resolves it, wherever butler.yaml lives. Real (SQLite) Butler repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.daf.butler import Butler, Config

from skybatch.errors import InputError
from skybatch.repository import ButlerRepository, resolve_repository


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    Butler.makeRepo(str(root))
    return root


@pytest.fixture
def apart(tmp_path: Path) -> tuple[Path, Path]:
    """(datastore root, butler.yaml kept in another directory under another name)."""
    root = tmp_path / "data" / "main"
    config = tmp_path / "etc" / "butler" / "main.yaml"
    config.parent.mkdir(parents=True)
    Butler.makeRepo(str(root), outfile=str(config))
    return root, config


def _index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **labels: Path | str) -> None:
    index = tmp_path / "repositories.yaml"
    index.write_text("".join(f"{label}: {uri}\n" for label, uri in labels.items()))
    monkeypatch.setenv("DAF_BUTLER_REPOSITORY_INDEX", str(index))
    monkeypatch.delenv("DAF_BUTLER_REPOSITORIES", raising=False)


def test_a_directory_its_butler_yaml_and_its_uri_name_the_same_repository(repo: Path) -> None:
    expected = ButlerRepository(str(repo), repo / "butler.yaml", repo, repo, repo.as_uri() + "/")
    assert resolve_repository(str(repo), where="--repo") == expected
    by_file = resolve_repository(str(repo / "butler.yaml"), where="--repo")
    by_uri = resolve_repository((repo / "butler.yaml").as_uri(), where="--repo")
    for other in (by_file, by_uri):
        assert (other.config_file, other.datastore_root, other.location) == (
            repo / "butler.yaml",
            repo,
            repo,
        )


def test_a_relative_path_is_relative_to_the_base_directory(repo: Path) -> None:
    found = resolve_repository("repo", where="repo", base_dir=repo.parent)
    assert found.datastore_root == repo


def test_a_butler_yaml_apart_from_its_datastore_is_archived_at_the_datastore_root(
    apart: tuple[Path, Path],
) -> None:
    root, config = apart
    found = resolve_repository(str(config), where="--repo")
    assert found.config_file == config
    assert found.location == config  # not DIR/butler.yaml: the file names it
    assert found.datastore_root == root.resolve()
    assert found.butler_root == root.resolve()
    with Butler.from_config(str(found.location)) as butler:  # what the Butler says too
        roots = [Path(r.ospath) for r in butler.get_datastore_roots().values() if r]
    assert roots == [found.datastore_root]


def test_a_datastore_in_an_s3_bucket_is_archived_at_its_uri(repo: Path, tmp_path: Path) -> None:
    config = Config(str(repo / "butler.yaml"))
    config["root"] = repo.as_uri()
    config["datastore", "root"] = "s3://bucket/survey"
    target = tmp_path / "s3.yaml"
    config.dumpToUri(str(target))
    found = resolve_repository(str(target), where="--repo")
    assert found.datastore_root is None
    assert found.datastore_uri == found.archive_root == "s3://bucket/survey/"
    assert resolve_repository(str(repo), where="--repo").archive_root == str(repo)
    config["datastore", "root"] = "https://example.org/survey/"
    config.dumpToUri(str(target))
    with pytest.raises(InputError, match="directory or in an S3 object store"):
        resolve_repository(str(target), where="--repo")


def test_an_index_label_names_the_repository(
    apart: tuple[Path, Path], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = apart
    _index(tmp_path, monkeypatch, main=config.as_uri(), local=repo)
    main = resolve_repository("main", where="--repo")
    assert (main.config_file, main.datastore_root) == (config, root.resolve())
    assert resolve_repository("local", where="--repo").datastore_root == repo
    with pytest.raises(InputError) as caught:
        resolve_repository("nosuch", where="--repo")
    assert caught.value.where == "--repo"
    assert "nosuch" in caught.value.message and "local, main" in caught.value.message


def test_what_is_not_a_repository_is_refused_naming_where(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        resolve_repository(str(tmp_path / "missing"), where="--repo")
    assert caught.value.where == "--repo" and "does not exist" in caught.value.message
    assert "DAF_BUTLER_REPOSITORY_INDEX" in (caught.value.hint or "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"has no butler\.yaml"):
        resolve_repository(str(tmp_path / "empty"), where="repo")
    with pytest.raises(InputError, match="not on a local filesystem"):
        resolve_repository("https://example.org/repo/butler.yaml", where="--repo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datastore: [unclosed\n")
    with pytest.raises(InputError, match="cannot read the Butler configuration"):
        resolve_repository(str(bad), where="--repo")
