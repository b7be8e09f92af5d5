"""`skybatch run` on a Butler repository whose datastore is in an S3 bucket (issue 15).

The demo survey is built with its datastore at ``s3://<bucket>/demo/`` on the real
local S3 server (moto, started by the test set-up), its registry in SQLite beside its
``butler.yaml``. A run of the demo pipeline then stages its inputs from the bucket to
the site cache, stages its outputs back into the bucket, verified and catalogued with
their md5s, removes its intermediates from the bucket, and `backbone verify` finds an
object changed in the bucket behind the catalog's back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lsst.daf.butler import Butler
from runworld import run_command

from skybatch.backbone.models import ReplicaState
from skybatch.backbone.service import Backbone
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import Survey, build_survey
from skybatch.errors import InputError
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_survey(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Survey, str]:
    """The demo survey with its datastore in a new bucket (built once: runs of the
    module's tests write distinct output runs)."""
    bucket = f"skybatch-survey-{os.getpid()}"
    s3_server.client.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("s3-survey") / "survey"
    build_survey(
        root,
        SurveyParams(visits=2, detectors=2, size=128, seed=13),
        datastore=f"s3://{bucket}/demo",
    )
    return Survey(root), bucket


def _objects(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_a_run_on_an_s3_datastore_lands_verified_outputs_in_the_bucket(
    s3_server: Any, s3_survey: tuple[Survey, str], tmp_path: Path
) -> None:
    survey, bucket = s3_survey
    home = tmp_path / "home"
    command = run_command(home, survey, "t/s3", "--workers", "2", "--intermediate", "postISRCCD")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    with Butler.from_config(str(survey.repo)) as butler:
        refs = butler.query_all_datasets("t/s3", find_first=False, limit=None)
        uris = {str(r.id): str(butler.getURI(r)) for r in refs}
    assert {"calexp", "deepCoadd", "isr_config"} <= {r.datasetType.name for r in refs}
    assert "postISRCCD" not in {r.datasetType.name for r in refs}  # cleaned up
    assert all(u.startswith(f"s3://{bucket}/demo/t/s3/") for u in uris.values())

    # Every output is an object in the bucket, catalogued with its md5 as online on
    # the archive (staged back from the site cache).
    objects = _objects(s3_server.client, bucket, "demo/t/s3/")
    backbone = Backbone.from_settings(load_settings(home=home))
    archive = backbone.archive_name()
    assert backbone.endpoint(archive).location == f"s3://{bucket}/demo/"
    files = backbone.catalog.files_by_dataset_ids(list(uris))
    assert len(files) == len(uris)
    for f in files.values():
        data = objects[f"demo/{f.path}"]
        assert (len(data), hashlib.md5(data).hexdigest()) == (f.size_bytes, f.md5)
    states = {
        p.file.id: p.replica.state
        for p in backbone.catalog.placements([f.id for f in files.values()], archive)
    }
    assert set(states.values()) == {ReplicaState.ONLINE} and len(states) == len(files)
    # The intermediates are gone from the bucket and the catalog.
    assert not [k for k in objects if "/postISRCCD/" in k]
    assert not backbone.catalog.files(run="t/s3", dataset_type="postISRCCD")

    # An object overwritten in the bucket: verify reports it and exits non-zero.
    calexp = next(f for f in files.values() if f.dataset_type == "calexp")
    s3_server.client.put_object(Bucket=bucket, Key=f"demo/{calexp.path}", Body=b"not a calexp")
    verify_command = [command[0], "--home", str(home), "backbone", "verify"]
    verify = subprocess.run(
        [*verify_command, "--endpoint", archive, "--run", "t/s3", "--no-repair"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 5, verify.stdout + verify.stderr
    assert calexp.path in verify.stdout + verify.stderr
    assert "corrupt" in verify.stdout + verify.stderr


def test_a_survey_is_not_built_over_the_files_of_another_datastore(
    s3_survey: tuple[Survey, str], tmp_path: Path
) -> None:
    _, bucket = s3_survey
    with pytest.raises(InputError, match="is not empty") as caught:
        build_survey(
            tmp_path / "again",
            SurveyParams(visits=1, detectors=1, size=64, seed=1),
            datastore=f"s3://{bucket}/demo",
        )
    assert caught.value.where == "--datastore"
    assert not (tmp_path / "again").exists()


def test_jobs_without_a_shared_filesystem_stage_from_and_to_the_bucket_themselves(
    s3_server: Any, s3_survey: tuple[Survey, str], tmp_path: Path
) -> None:
    survey, bucket = s3_survey
    home = tmp_path / "home"
    command = run_command(home, survey, "t/noshared", "--workers", "2", "--no-shared-filesystem")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    objects = _objects(s3_server.client, bucket, "demo/")
    backbone = Backbone.from_settings(load_settings(home=home))
    files = backbone.catalog.files(run="t/noshared")
    assert {f.dataset_type for f in files} >= {"calexp", "deepCoadd"}
    for f in files:  # each job's outputs went straight into the bucket, verified
        data = objects[f"demo/{f.path}"]
        assert (len(data), hashlib.md5(data).hexdigest()) == (f.size_bytes, f.md5)
    assert [p for p in (home / "site-cache").rglob("*") if p.is_file()] == []  # no site copies


def test_a_corrupt_site_replica_is_replaced_by_the_bucket_copy_in_the_job(
    s3_survey: tuple[Survey, str], tmp_path: Path
) -> None:
    from skybatch.demo.driver import pipeline_path
    from skybatch.demo.survey import DEFAULTS
    from skybatch.run.driver import RunOptions, read_reports, submit_run

    survey, _ = s3_survey
    settings = load_settings(home=tmp_path / "home")

    def options(run: str) -> RunOptions:
        return RunOptions(
            repo=survey.repo,
            pipeline=str(pipeline_path()) + "#step1",
            inputs=[DEFAULTS],
            workers=2,
            output_run=run,
            query="visit = 1000 AND detector = 0",
        )

    assert submit_run(settings, options("t/flip-a")).state == "succeeded"
    backbone = Backbone.from_settings(settings)
    raws = backbone.catalog.files(dataset_type="raw")
    cached = backbone.catalog.placements([f.id for f in raws], "site:local")
    assert cached
    site = backbone.endpoint("site:local")
    for p in cached:  # one byte flipped in the middle, same size
        local = site.local_path(p.file.path)
        data = bytearray(local.read_bytes())
        data[len(data) // 2] ^= 0xFF
        local.write_bytes(bytes(data))

    again = submit_run(settings, options("t/flip-b"))
    assert again.state == "succeeded"
    replaced = {p for r in read_reports(Path(again.workdir)) for p in r.inputs_replaced}
    assert replaced and replaced <= {p.file.path for p in cached}
    after = backbone.catalog.placements([p.file.id for p in cached], "site:local")
    assert any(p.replica.state == ReplicaState.CORRUPT for p in after)


def test_a_reference_catalog_export_lands_its_shards_in_the_bucket(
    s3_server: Any, s3_survey: tuple[Survey, str], tmp_path: Path
) -> None:
    from skybatch.backbone.export import export_refcat

    survey, bucket = s3_survey
    backbone = Backbone.from_settings(load_settings(home=tmp_path / "home"))
    backbone.bootstrap(survey.repo, subject="the survey", where="--repo")
    report = export_refcat(backbone, survey.repo, survey.refcat_db, visits=[1000], run="refcats/s3")
    assert report.shards and report.files_registered == len(report.shards)
    objects = _objects(s3_server.client, bucket, "demo/refcats/s3/")
    files = backbone.catalog.files(run="refcats/s3")
    assert len(files) == len(report.shards)
    for f in files:
        data = objects[f"demo/{f.path}"]
        assert (len(data), hashlib.md5(data).hexdigest()) == (f.size_bytes, f.md5)
