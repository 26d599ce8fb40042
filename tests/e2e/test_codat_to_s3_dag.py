"""CodatToS3Operator through real DAG runs: Airflow on SQLite, the fake Codat API and moto's S3 over HTTP."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_codat.data_types import DATA_TYPES
from tests.e2e.conftest import read_objects, task_states, xcom

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

START = datetime(2024, 2, 1, tzinfo=UTC)
END = datetime(2024, 2, 15, tzinfo=UTC)


def run(dag, **kwargs):
    return dag.test(**kwargs)


def in_window(records, start=START, end=END):
    lo, hi = start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [r for r in records if lo <= r["modifiedDate"] < hi]


def folder(company, data_type="invoices", prefix="codat"):
    return f"{prefix}/{data_type}/company_id={company}/window_start=20240201T000000Z/window_end=20240215T000000Z"


def jsonl_gz(blob: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(blob).splitlines()]


def read_table(key: str, blob: bytes) -> tuple[list[dict], list[str]]:
    """The rows and column names of a ``.csv.gz`` or ``.parquet`` part file."""
    if key.endswith(".csv.gz"):
        reader = csv.DictReader(io.StringIO(gzip.decompress(blob).decode()))
        return list(reader), list(reader.fieldnames)
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(blob))
    return table.to_pylist(), table.column_names


@pytest.mark.fake_codat(companies=3, records={"invoices": 3000})
def test_incremental_window_lands_exactly_the_fakes_records(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    dag = make_dag(
        "e2e_invoices",
        company_id=company,
        data_type="invoices",
        s3_bucket=bucket,
        window_start=START.isoformat(),
        window_end=END.isoformat(),
        hook_params={"page_size": 100},
    )
    dr = run(dag)
    assert task_states(dr) == {"extract": "success"}

    objects = read_objects(s3, bucket)
    manifest_key = f"{folder(company)}/_manifest.json"
    manifest = json.loads(objects.pop(manifest_key))
    expected = in_window(fake.records(company, "invoices"))
    assert 100 < len(expected) < 3000  # the window cuts the data set: a real test of the filter
    written = [r for key in sorted(objects) for r in jsonl_gz(objects[key])]
    assert sorted(written, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    assert any(r["metadata"]["isDeleted"] for r in written)  # deletes are kept as they come

    assert manifest["status"] == "complete"
    assert manifest["records"] == len(expected)
    assert manifest["query"] == "modifiedDate>=2024-02-01T00:00:00Z&&modifiedDate<2024-02-15T00:00:00Z"
    assert manifest["window"] == {
        "kind": "incremental",
        "start": "2024-02-01T00:00:00Z",
        "end": "2024-02-15T00:00:00Z",
        "query_start": "2024-02-01T00:00:00Z",
    }
    assert [f["key"] for f in manifest["files"]] == sorted(objects)
    for entry in manifest["files"]:
        import hashlib

        blob = objects[entry["key"]]
        assert entry["bytes"] == len(blob) and entry["sha256"] == hashlib.sha256(blob).hexdigest()
        assert entry["key"].startswith(f"{folder(company)}/attempt=")
        assert entry["key"].endswith("/part-00000.jsonl.gz")
    assert manifest["requests"] == -(-len(expected) // 100)

    summary = xcom(dr, "extract")
    assert summary["records"] == len(expected)
    assert summary["manifest"] == f"s3://{bucket}/{manifest_key}"
    assert summary["files"] == [f"s3://{bucket}/{k}" for k in sorted(objects)]
    assert set(summary) == {
        "status", "company_id", "data_type", "window", "records", "files", "manifest", "requests", "retries",
        "duration_seconds",
    }  # fmt: skip


@pytest.mark.fake_codat(companies=2, records={"invoices": 400})
def test_rerun_replaces_the_window_and_leaves_other_windows(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    common = dict(company_id=company, data_type="invoices", s3_bucket=bucket, window_end=END.isoformat())
    # Another window of the same dataset, which a rerun must not touch.
    other = run(
        make_dag(
            "e2e_other",
            window_start=(START - timedelta(days=14)).isoformat(),
            **{**common, "window_end": START.isoformat()},
        )
    )
    assert task_states(other) == {"extract": "success"}
    # First attempt: small files (several parts), then a rerun with one big file.
    first = run(
        make_dag("e2e_rerun", window_start=START.isoformat(), max_file_size=1024 * 1024, file_format="csv", **common)
    )
    assert task_states(first) == {"extract": "success"}
    before = read_objects(s3, bucket, folder(company))
    second = run(make_dag("e2e_rerun", window_start=START.isoformat(), file_format="jsonl", **common))
    assert task_states(second) == {"extract": "success"}
    after = read_objects(s3, bucket, folder(company))
    manifest = json.loads(after.pop(f"{folder(company)}/_manifest.json"))
    assert sorted(after) == [f["key"] for f in manifest["files"]]  # only the new attempt's files remain
    assert not set(after) & set(before)
    assert manifest["records"] == len(in_window(fake.records(company, "invoices")))
    other_prefix = f"codat/invoices/company_id={company}/window_start=20240118T000000Z/"
    assert any(k.endswith("_manifest.json") for k in read_objects(s3, bucket, other_prefix))


@pytest.mark.fake_codat(companies=2, records={"invoices": 300})
@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_csv_and_parquet_are_readable_by_standard_tools(e2e, make_dag, file_format):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[1]
    dag = make_dag(
        f"e2e_{file_format}",
        company_id=company,
        data_type="invoices",
        s3_bucket=bucket,
        window_start=START.isoformat(),
        window_end=END.isoformat(),
        file_format=file_format,
        compression="gzip" if file_format == "csv" else "snappy",
    )
    assert task_states(run(dag)) == {"extract": "success"}
    objects = read_objects(s3, bucket, folder(company))
    (part_key,) = [k for k in objects if "/part-" in k]
    expected = {r["id"]: r for r in in_window(fake.records(company, "invoices"))}
    rows, columns = read_table(part_key, objects[part_key])
    assert part_key.endswith(".csv.gz" if file_format == "csv" else ".parquet")
    assert sorted(r["id"] for r in rows) == sorted(expected)
    # The columns are the fields of Codat's invoice schema, whatever these records carry.
    assert columns == [*DATA_TYPES["invoices"].fields, "_extra"]
    assert json.loads(objects[f"{folder(company)}/_manifest.json"])["columns"] == columns
    row = rows[0]
    source = expected[row["id"]]
    assert row["invoiceNumber"] == source["invoiceNumber"]
    assert json.loads(row["lineItems"]) == source["lineItems"]
    assert json.loads(row["totalAmount"]) == source["totalAmount"]


@pytest.mark.fake_codat(companies=1, records={"invoices": 200, "bankTransactions": 40})
@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_table_columns_are_the_same_for_every_run_whatever_the_records_carry(e2e, make_dag, file_format):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    invoices = fake.records(company, "invoices")
    paid, unpaid = [r for r in invoices if "paidOnDate" in r], [r for r in invoices if "paidOnDate" not in r]
    assert paid and unpaid  # the fake leaves optional fields out of some records
    common = dict(company_id=company, s3_bucket=bucket, file_format=file_format, full_refresh=True)
    headers = {}
    for name, records in (("paid", paid), ("unpaid", unpaid)):
        query = " || ".join(f"id={r['id']}" for r in records[:5])
        dag = make_dag(f"e2e_cols_{file_format}_{name}", data_type="invoices", query=query, s3_prefix=name, **common)
        assert task_states(run(dag)) == {"extract": "success"}
        objects = read_objects(s3, bucket, f"{name}/invoices/")
        (part_key,) = [k for k in objects if "/part-" in k]
        rows, headers[name] = read_table(part_key, objects[part_key])
        assert sorted(row["id"] for row in rows) == sorted(r["id"] for r in records[:5])
        assert {bool(row["paidOnDate"]) for row in rows} == {name == "paid"}
    assert headers["paid"] == headers["unpaid"] == [*DATA_TYPES["invoices"].fields, "_extra"]

    # Bank transactions also carry where they were read from.
    dag = make_dag(f"e2e_cols_{file_format}_bank", data_type="bankTransactions", s3_prefix="bank", **common)
    assert task_states(run(dag)) == {"extract": "success"}
    objects = read_objects(s3, bucket, "bank/bankTransactions/")
    (part_key,) = [k for k in objects if "/part-" in k]
    rows, columns = read_table(part_key, objects[part_key])
    assert columns == sorted([*DATA_TYPES["bankTransactions"].fields, "_bankAccountId", "_connectionId"]) + ["_extra"]
    expected = fake.records(company, "bankTransactions")
    assert sorted(row["id"] for row in rows) == sorted(r["id"] for r in expected)
    assert {(row["_bankAccountId"], row["accountId"]) for row in rows} == {(r["accountId"],) * 2 for r in expected}
    connections = {c["id"] for c in fake.connections(company)}
    assert all(row["_connectionId"] in connections for row in rows)
    assert {row["_extra"] for row in rows} == ({""} if file_format == "csv" else {None})


@pytest.mark.fake_codat(companies=2, records={"invoices": 50})
@pytest.mark.parametrize(
    ("kwargs", "header"),
    [({"encrypt": True}, ("AES256", None)), ({"sse_kms_key_id": "alias/codat"}, ("aws:kms", "alias/codat"))],
)
def test_server_side_encryption(e2e, make_dag, kwargs, header):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    dag = make_dag("e2e_sse", company_id=company, data_type="invoices", s3_bucket=bucket, full_refresh=True, **kwargs)
    assert task_states(run(dag)) == {"extract": "success"}
    keys = list(read_objects(s3, bucket))
    assert len(keys) == 2  # one part, one manifest
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == header[0]
        assert head.get("SSEKMSKeyId", None) == header[1] or header[1] in head.get("SSEKMSKeyId", "")


@pytest.mark.fake_codat(companies=2)
def test_not_synced_data_type_ends_skipped_with_a_manifest_saying_why(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    fake.set_unsynced(company, "bills")
    dag = make_dag("e2e_skip", company_id=company, data_type="bills", s3_bucket=bucket, full_refresh=True)
    dr = run(dag)
    assert task_states(dr) == {"extract": "skipped"}
    (key,) = read_objects(s3, bucket)
    manifest = json.loads(read_objects(s3, bucket)[key])
    assert key.endswith("/_manifest.json") and key.startswith(f"codat/bills/company_id={company}/full_refresh/as_of=")
    assert (manifest["status"], manifest["reason"], manifest["files"], manifest["records"]) == (
        "skipped",
        "not_synced",
        [],
        0,
    )
    assert xcom(dr, "extract", key="codat_summary")["status"] == "skipped"


@pytest.mark.fake_codat(companies=1, records={"invoices": 300})
def test_a_skipped_rerun_never_replaces_a_complete_dataset(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    window = dict(window_start=START.isoformat(), window_end=END.isoformat())
    dag = make_dag("e2e_keep", company_id=company, data_type="invoices", s3_bucket=bucket, **window)
    assert task_states(run(dag)) == {"extract": "success"}
    before = read_objects(s3, bucket)
    assert json.loads(before[f"{folder(company)}/_manifest.json"])["status"] == "complete"
    # Codat cannot give the data now (a re-sync under way): the rerun of the window ends skipped...
    fake.set_unsynced(company, "invoices")
    dr = run(dag)
    assert task_states(dr) == {"extract": "skipped"}
    summary = xcom(dr, "extract", key="codat_summary")
    assert (summary["status"], summary["reason"], summary["kept_complete_dataset"]) == ("skipped", "not_synced", True)
    # ...and the complete dataset, manifest and files, is exactly as it was.
    assert read_objects(s3, bucket) == before
    # With skip_when_unavailable off the task fails, and the data still stays.
    strict = make_dag("e2e_keep_strict", company_id=company, data_type="invoices", s3_bucket=bucket,
                      skip_when_unavailable=False, **window)  # fmt: skip
    assert task_states(run(strict)) == {"extract": "failed"}
    assert read_objects(s3, bucket) == before


@pytest.mark.fake_codat(companies=10)
def test_one_connection_and_all_connections_land_in_folders_of_their_own(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = next(
        c for c in fake.company_ids()
        if sum(x["sourceType"] == "Accounting" and x["status"] == "Linked" for x in fake.connections(c)) == 2
    )  # fmt: skip
    first, second = [x["id"] for x in fake.connections(company) if x["sourceType"] == "Accounting"][:2]
    common = dict(company_id=company, data_type="bankAccounts", s3_bucket=bucket, full_refresh=True)
    for name, connection in (("one", first), ("other", second), ("all", None)):
        dag = make_dag(f"e2e_scope_{name}", connection_id=connection, **common)
        assert task_states(run(dag)) == {"extract": "success"}
    manifests = {k: json.loads(v) for k, v in read_objects(s3, bucket).items() if k.endswith("_manifest.json")}
    by_scope = {tuple(m["connection_ids"]): (k, m["records"]) for k, m in manifests.items()}
    expected = {c: len(fake.records(company, "bankAccounts", connection_id=c)) for c in (first, second)}
    assert by_scope[(first,)][1] == expected[first] and f"/connection_id={first}/" in by_scope[(first,)][0]
    assert by_scope[(second,)][1] == expected[second] and f"/connection_id={second}/" in by_scope[(second,)][0]
    assert by_scope[(first, second)][1] == expected[first] + expected[second]
    assert "/connection_id=" not in by_scope[(first, second)][0]
    # Every manifest's files are still there: no task's rerun logic removed another's.
    objects = read_objects(s3, bucket)
    assert all(f["key"] in objects for m in manifests.values() for f in m["files"])


@pytest.mark.fake_codat(companies=10)
def test_a_connection_without_the_data_type_does_not_discard_the_others(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[4]  # two Linked Accounting connections, on different platforms
    first, second = [x["id"] for x in fake.connections(company) if x["sourceType"] == "Accounting"]
    fake.set_unsupported(company, "directCosts", connection_id=second)
    common = dict(company_id=company, data_type="directCosts", s3_bucket=bucket, full_refresh=True)
    dr = run(make_dag("e2e_one_unsupported", **common))
    assert task_states(dr) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    (manifest,) = [json.loads(v) for k, v in objects.items() if k.endswith("_manifest.json")]
    assert manifest["status"] == "complete" and manifest["connection_ids"] == [first]
    assert manifest["unavailable_connections"] == [{"connection_id": second, "reason": "not_supported"}]
    written = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
    expected = fake.records(company, "directCosts", connection_id=first)
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in expected) and len(expected) > 0

    # When no connection has it, the dataset is skipped as before.
    fake.set_unsupported(company, "directCosts", connection_id=first)
    dr = run(make_dag("e2e_none_supported", s3_prefix="none", **common))
    assert task_states(dr) == {"extract": "skipped"}
    assert xcom(dr, "extract", key="codat_summary")["reason"] == "not_supported"


@pytest.mark.fake_codat(companies=1, records={"invoices": 100})
def test_failing_to_clean_up_earlier_attempts_does_not_fail_a_complete_run(e2e, make_dag, monkeypatch, capfd):
    from botocore.exceptions import ClientError

    from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator

    def denied(self, folder, attempt):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListMultipartUploads")

    monkeypatch.setattr(CodatToS3Operator, "_delete_other_attempts", denied)
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    dag = make_dag("e2e_cleanup", company_id=company, data_type="invoices", s3_bucket=bucket,
                   window_start=START.isoformat(), window_end=END.isoformat())  # fmt: skip
    dr = run(dag)
    assert task_states(dr) == {"extract": "success"}
    manifest = json.loads(read_objects(s3, bucket)[f"{folder(company)}/_manifest.json"])
    assert manifest["status"] == "complete" and manifest["records"] == len(in_window(fake.records(company, "invoices")))
    out = "".join(capfd.readouterr())  # the task logger writes through structlog, not stdlib logging
    assert "removing what earlier attempts of this window left failed: An error occurred (AccessDenied)" in out
    assert "s3:ListBucketMultipartUploads and s3:AbortMultipartUpload" in out


@pytest.mark.fake_codat(companies=2)
def test_manual_run_without_data_interval_reads_everything(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    dag = make_dag("e2e_manual", company_id=company, data_type="customers", s3_bucket=bucket)
    dr = run(dag, logical_date=None)
    assert task_states(dr) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    (manifest_key,) = [k for k in objects if k.endswith("_manifest.json")]
    assert "/full_refresh/as_of=" in manifest_key
    written = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in fake.records(company, "customers"))


@pytest.mark.fake_codat(companies=2)
def test_connection_scoped_records_carry_their_connection(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = next(c for c in fake.company_ids() if any(x["sourceType"] == "Accounting" for x in fake.connections(c)))
    dag = make_dag("e2e_conn", company_id=company, data_type="bankAccounts", s3_bucket=bucket, full_refresh=True)
    dr = run(dag)
    assert task_states(dr) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    written = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
    expected = []
    for conn in fake.connections(company):
        if conn["sourceType"] == "Accounting" and conn["status"] != "PendingAuth":
            expected += [
                {**r, "_connectionId": conn["id"]}
                for r in fake.records(company, "bankAccounts", connection_id=conn["id"])
            ]
    assert sorted(written, key=lambda r: (r["_connectionId"], r["id"])) == sorted(
        expected, key=lambda r: (r["_connectionId"], r["id"])
    )


@pytest.mark.fake_codat(companies=1)
def test_financial_reports_are_written_with_codats_required_parameters(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    common = dict(company_id=company, data_type="profitAndLoss", s3_bucket=bucket)
    # No report_params: Codat requires periodLength and periodsToCompare, so a year of months is asked for.
    assert task_states(run(make_dag("e2e_report_default", s3_prefix="default", **common))) == {"extract": "success"}
    assert task_states(
        run(make_dag("e2e_report_quarters", s3_prefix="quarters", report_params={"periodLength": 3, "periodsToCompare": 2}, **common))
    ) == {"extract": "success"}  # fmt: skip
    for prefix, params in (("default", {"periodLength": "1", "periodsToCompare": "12"}),
                           ("quarters", {"periodLength": "3", "periodsToCompare": "2"})):  # fmt: skip
        objects = read_objects(s3, bucket, f"{prefix}/profitAndLoss/company_id={company}/snapshot/")
        (report,) = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
        assert report == fake.snapshot(company, "profitAndLoss", params)
        assert len(report["reports"]) == int(params["periodsToCompare"])


@pytest.mark.fake_codat(companies=1, platform_ids=True, records={"bankAccounts": 3, "bankTransactions": 40})
def test_bank_transactions_under_platform_style_account_ids(e2e, make_dag):
    # QuickBooks Online's bank account ids are short numbers, and transaction ids repeat across accounts.
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    (accounting,) = [c for c in fake.connections(company) if c["sourceType"] == "Accounting"]
    assert fake.bank_account_ids(company, accounting["id"]) == ["1", "2", "3"]
    dag = make_dag(
        "e2e_platform_ids", company_id=company, data_type="bankTransactions", s3_bucket=bucket, full_refresh=True,
        hook_params={"page_size": 15},
    )  # fmt: skip
    assert task_states(run(dag)) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    written = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
    expected = [
        {**r, "_connectionId": accounting["id"], "_bankAccountId": account}
        for account in ("1", "2", "3")
        for r in fake.records(company, "bankTransactions", connection_id=accounting["id"], bank_account_id=account)
    ]
    assert len(expected) == 120 and len({r["id"] for r in expected}) == 40
    key = lambda r: (r["_bankAccountId"], r["id"])  # noqa: E731
    assert sorted(written, key=key) == sorted(expected, key=key)


@pytest.mark.fake_codat(companies=1, records={"banking-accountBalances": 900})
def test_records_without_an_id_land_complete_over_many_pages(e2e, make_dag):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    (banking,) = [c for c in fake.connections(company) if c["sourceType"] == "Banking"]
    dag = make_dag(
        "e2e_balances", company_id=company, data_type="banking-accountBalances", s3_bucket=bucket,
        window_start=START.isoformat(), window_end=END.isoformat(), hook_params={"page_size": 100, "concurrency": 4},
    )  # fmt: skip
    assert task_states(run(dag)) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    written = [r for k, v in objects.items() if "/part-" in k for r in jsonl_gz(v)]
    expected = [{**r, "_connectionId": banking["id"]} for r in in_window(fake.records(company, "banking-accountBalances"))]
    assert len(expected) > 100  # more than one page
    canonical = lambda records: sorted(json.dumps(r, sort_keys=True) for r in records)  # noqa: E731
    assert canonical(written) == canonical(expected)
    (manifest,) = [json.loads(v) for k, v in objects.items() if k.endswith("_manifest.json")]
    assert manifest["records"] == len(expected) and manifest["connection_ids"] == [banking["id"]]


@pytest.mark.fake_codat(companies=2, records={"invoices": 200})
def test_api_key_never_in_logs_xcoms_or_objects(e2e, make_dag, capfd, caplog):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    fake.configure(fail_5xx=2)  # errors and retries get logged too
    dag = make_dag("e2e_secret", company_id=company, data_type="invoices", s3_bucket=bucket, full_refresh=True)
    dr = run(dag)
    assert task_states(dr) == {"extract": "success"}
    secrets = [fake.api_key, base64.b64encode(fake.api_key.encode()).decode()]
    haystacks = [json.dumps(xcom(dr, "extract")), json.dumps(xcom(dr, "extract", key="codat_summary"))]
    haystacks += [
        v.decode(errors="replace") for v in read_objects(s3, bucket).values() if not v.startswith(b"\x1f\x8b")
    ]
    haystacks += [gzip.decompress(v).decode() for v in read_objects(s3, bucket).values() if v.startswith(b"\x1f\x8b")]
    out, err = capfd.readouterr()
    haystacks += [out, err, caplog.text]
    assert "Retrying" in out + err + caplog.text  # the logs we scan are the real ones
    for text in haystacks:
        for secret in secrets:
            assert secret not in text


@pytest.mark.fake_codat(companies=2, records={"invoices": 2000}, dates_only=True)
def test_codat_rejecting_timestamps_falls_back_to_whole_days_filtered_here(e2e, make_dag):
    """Codat's docs only show dates in queries; if timestamps are refused the window is still exact."""
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    start, end = datetime(2024, 2, 1, 6, tzinfo=UTC), datetime(2024, 2, 3, 18, tzinfo=UTC)
    dag = make_dag(
        "e2e_dates_only",
        company_id=company,
        data_type="invoices",
        s3_bucket=bucket,
        window_start=start.isoformat(),
        window_end=end.isoformat(),
    )
    assert task_states(run(dag)) == {"extract": "success"}
    objects = read_objects(s3, bucket)
    (manifest_key,) = [k for k in objects if k.endswith("_manifest.json")]
    manifest = json.loads(objects.pop(manifest_key))
    assert manifest["query"] == "modifiedDate>=2024-02-01&&modifiedDate<2024-02-04"
    assert manifest["window_filtered_client_side"] is True
    written = [r for blob in objects.values() for r in jsonl_gz(blob)]
    expected = in_window(fake.records(company, "invoices"), start, end)
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in expected) and expected
    assert manifest["records"] == len(expected)
