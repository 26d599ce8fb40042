"""The example DAGs users copy: they parse, and they run end to end against the fake Codat API and S3."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import read_objects, task_states, xcom

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
EXAMPLES = {
    "example_codat_to_s3",
    "example_codat_single_company",
    "example_codat_asset_consumer",
    "example_codat_refresh_then_extract",
}


def test_example_dags_parse_without_errors():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronDataIntervalTimetable

    bag = DagBag(dag_folder=str(REPO_DAGS))
    assert bag.import_errors == {}
    assert set(bag.dags) == EXAMPLES
    # A cron string would give Airflow 3's zero-width intervals: the incremental DAGs must not use one.
    for dag_id in ("example_codat_to_s3", "example_codat_single_company"):
        assert isinstance(bag.dags[dag_id].timetable, CronDataIntervalTimetable), dag_id
    scheduled = bag.dags["example_codat_to_s3"]
    assert {t.task_id for t in scheduled.tasks} >= {"list_companies", "summarise", "extract_lane_0", "plan_lane_7"}
    assert all(t.pool == "codat" for t in scheduled.tasks if t.task_id.startswith("extract_lane_"))


@pytest.fixture
def example_dags(dags_folder):
    """The repo's example DAGs in this worker's dags folder, and the pool they use."""
    from airflow.models.pool import Pool

    dags_folder.mkdir(parents=True, exist_ok=True)
    for path in REPO_DAGS.glob("example_*.py"):
        shutil.copy(path, dags_folder / path.name)
    Pool.create_or_update_pool("codat", slots=8, description="Codat extractions", include_deferred=False)
    yield
    for path in REPO_DAGS.glob("example_*.py"):
        (dags_folder / path.name).unlink(missing_ok=True)


def dag_from_folder(dags_folder, dag_id):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


@pytest.mark.fake_codat(companies=6, records={"invoices": 300, "customers": 100, "accounts": 50})
def test_scheduled_dag_beyond_max_map_length(e2e, example_dags, dags_folder, monkeypatch):
    """15 extractions with max_map_length 4: the lanes keep every mapped task under the limit."""
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4")
    companies = fake.company_ids()[:5]
    data_types = ["invoices", "customers", "accounts"]
    dag = dag_from_folder(dags_folder, "example_codat_to_s3")
    # A run at 01:00 on 10 Feb reads the data interval [9 Feb 01:00, 10 Feb 01:00).
    dr = dag.test(
        logical_date=datetime(2024, 2, 10, 1, tzinfo=UTC),
        run_conf={"data_types": data_types, "company_ids": companies, "s3_bucket": bucket, "lookback_minutes": 0},
    )
    states = task_states(dr)
    assert states["summarise"] == "success"
    assert all(state in ("success", "skipped") for state in states.values()), states

    # Companies 0-4 of the fake each have a Linked Accounting connection: every pair is planned.
    assert xcom(dr, "list_companies") == {company: data_types for company in companies}
    summary = xcom(dr, "summarise")
    assert summary["planned"] == 15 and summary["failed"] == 0
    assert summary["complete"] + summary["skipped"] == summary["planned"]

    lo, hi = "2024-02-09T01:00:00Z", "2024-02-10T01:00:00Z"
    checked = 0
    for company in companies:
        for data_type in data_types:
            folder = f"codat/{data_type}/company_id={company}/window_start=20240209T010000Z/window_end=20240210T010000Z"
            objects = read_objects(s3, bucket, folder)
            manifest = json.loads(objects.pop(f"{folder}/_manifest.json"))
            written = [json.loads(line) for blob in objects.values() for line in gzip.decompress(blob).splitlines()]
            expected = [r for r in fake.records(company, data_type) if lo <= r["modifiedDate"] < hi]
            assert sorted(r["id"] for r in written) == sorted(r["id"] for r in expected), (company, data_type)
            assert manifest["records"] == len(expected)
            checked += len(expected)
    assert checked == summary["records"] > 0


@pytest.mark.fake_codat(companies=20, records={"invoices": 30, "banking-accounts": 4})
def test_scheduled_dag_plans_by_readable_connection(e2e, example_dags, dags_folder):
    """
    Each company's data types are the ones it has a readable connection for: Banking types too, and
    what an Unlinked connection pulled before; a company with only a PendingAuth connection is left out.
    """
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    ids = fake.company_ids()
    # By the fake's layout (fake_codat/data.py): 0 Linked Accounting + Linked Banking; 1 Linked
    # Accounting; 18 Unlinked Accounting; 19 PendingAuth Accounting.
    both, accounting, unlinked, pending = ids[0], ids[1], ids[18], ids[19]
    assert [(c["sourceType"], c["status"]) for c in fake.connections(both)] == [
        ("Accounting", "Linked"),
        ("Banking", "Linked"),
    ]
    assert [(c["sourceType"], c["status"]) for c in fake.connections(unlinked)] == [("Accounting", "Unlinked")]
    assert [(c["sourceType"], c["status"]) for c in fake.connections(pending)] == [("Accounting", "PendingAuth")]
    dag = dag_from_folder(dags_folder, "example_codat_to_s3")
    dr = dag.test(
        logical_date=datetime(2024, 2, 10, 1, tzinfo=UTC),
        run_conf={
            "data_types": ["invoices", "banking-accounts"],
            "company_ids": [both, accounting, unlinked, pending],
            "full_refresh": True,
            "s3_bucket": bucket,
        },
    )
    states = task_states(dr)
    assert states["summarise"] == "success"
    assert xcom(dr, "list_companies") == {
        both: ["invoices", "banking-accounts"],
        accounting: ["invoices"],
        unlinked: ["invoices"],
    }
    summary = xcom(dr, "summarise")
    assert (summary["planned"], summary["complete"], summary["skipped"], summary["failed"]) == (4, 4, 0, 0)
    manifests = [json.loads(v) for k, v in read_objects(s3, bucket).items() if k.endswith("_manifest.json")]
    assert sorted((m["company_id"], m["data_type"], m["status"], m["records"]) for m in manifests) == sorted(
        [
            (both, "invoices", "complete", 30),
            (both, "banking-accounts", "complete", len(fake.records(both, "banking-accounts"))),
            (accounting, "invoices", "complete", 30),
            (unlinked, "invoices", "complete", 30),
        ]
    )
    assert len(fake.records(both, "banking-accounts")) == 4


@pytest.mark.fake_codat(companies=3, records={"invoices": 40, "customers": 30})
def test_refresh_then_extract_past_an_unsupported_type(e2e, example_dags, dags_folder):
    """A data type the platform lacks settles the sensor (NotSupported) and is skipped; the others still land."""
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    fake.set_unsupported(company, "customers")
    dag = dag_from_folder(dags_folder, "example_codat_refresh_then_extract")
    dr = dag.test(run_conf={"company_id": company, "data_types": ["invoices", "customers"], "s3_bucket": bucket})
    assert task_states(dr) == {
        "queue_refresh": "success",
        "wait_for_sync": "success",
        "extract[0]": "success",
        "extract[1]": "skipped",
    }
    manifests = {k: json.loads(v) for k, v in read_objects(s3, bucket).items() if k.endswith("_manifest.json")}
    assert sorted((m["data_type"], m["status"], m["records"]) for m in manifests.values()) == [
        ("customers", "skipped", 0),
        ("invoices", "complete", len(fake.records(company, "invoices"))),
    ]


@pytest.mark.fake_codat(companies=3, records={"invoices": 40, "customers": 30})
def test_refresh_then_extract(e2e, example_dags, dags_folder):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    dag = dag_from_folder(dags_folder, "example_codat_refresh_then_extract")
    dr = dag.test(run_conf={"company_id": company, "data_types": ["invoices", "customers"], "s3_bucket": bucket})
    assert task_states(dr) == {
        "queue_refresh": "success",
        "wait_for_sync": "success",
        "extract[0]": "success",
        "extract[1]": "success",
    }
    by_path = fake.stats()["by_path"]
    for key in ("invoices", "customers"):  # the refresh really was queued, once per data type
        assert by_path[f"/companies/{company}/data/queue/{key}"] == {"200": 1}
    manifests = {k: json.loads(v) for k, v in read_objects(s3, bucket).items() if k.endswith("_manifest.json")}
    assert sorted((m["data_type"], m["records"]) for m in manifests.values()) == [
        ("customers", len(fake.records(company, "customers"))),
        ("invoices", len(fake.records(company, "invoices"))),
    ]
