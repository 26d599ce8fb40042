"""Fault injection, end to end: real DAG runs against the fake Codat API and moto's S3 over HTTP.

Every case ends the same way: either the window's manifest lists exactly the fake's records for
the window (each once, unchanged; checked record by record by ``figures.check_window``), or the
task failed with a clear message and left no manifest, no part and no pending multipart upload.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_provider_codat.hooks.codat import CodatHook
from airflow_provider_codat.testing.local_stack import airflow_env
from tests.e2e.conftest import read_objects, task_states, xcom
from tests.reliability.helpers import (
    END,
    FAST,
    START,
    assert_no_pending_uploads,
    folder,
    in_window,
    no_manifest,
    pending_uploads,
    wait_for_requests,
    wait_past_midnight_utc,
)
from tests.reliability.s3_proxy import Fault

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reliability")]

WINDOW = {"window_start": START.isoformat(), "window_end": END.isoformat()}
#: A window holding every record the fake generates (its modifiedDate range), for large files.
ALL_START, ALL_END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
ALL = {"window_start": ALL_START.isoformat(), "window_end": ALL_END.isoformat()}


def extract(make_dag, dag_id: str, company: str, bucket: str, *, hook_params=None, window=WINDOW, **kwargs):
    """A one-task DAG extracting invoices (by default) for one window, with fast retries."""
    kwargs.setdefault("data_type", "invoices")
    return make_dag(
        dag_id,
        company_id=company,
        s3_bucket=bucket,
        hook_params={**FAST, **(hook_params or {})},
        **window,
        **kwargs,
    )


def truth(fake, company: str, data_type: str = "invoices", start=START, end=END) -> list[dict]:
    return in_window(fake.records(company, data_type), start, end)


# -- Codat: rate limits ----------------------------------------------------------------------------


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
@pytest.mark.parametrize(
    ("retry_after_format", "page_filter"),
    [("seconds", None), ("http-date", "?page=3&")],
    ids=["seconds-first-page", "http-date-middle-page"],
)
def test_429_burst_waits_as_told_and_completes(e2e, make_dag, figures, retry_after_format, page_filter):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    expected = truth(fake, company)
    # Three 429s in a row: on page 1 (before the parallel fetches start), or on page 3 while the
    # other pages are fetched in parallel (only that page may wait and retry, order kept).
    fake.configure(fail_429=3, fail_429_path=page_filter, retry_after_s=1, retry_after_format=retry_after_format)
    dag = extract(make_dag, f"rel_429_{retry_after_format.replace('-', '_')}", company, bucket,
                  hook_params={"page_size": 25, "concurrency": 4})  # fmt: skip
    dr = dag.test()
    assert task_states(dr) == {"extract": "success"}
    assert fake.stats()["faults"]["fail_429"] == 3
    check = figures.check_window(f"429 x3, Retry-After as {retry_after_format}, {page_filter or 'page 1'}", s3,
                                 bucket, folder(company), expected)  # fmt: skip
    assert check.manifest["rate_limited"] == 3 and check.manifest["retries"] >= 3
    # Each Retry-After (1 s or more) was honoured: a lower bound on the run, so never flaky.
    assert check.manifest["duration_seconds"] >= 2.9


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_daily_quota_fails_fast_with_a_clear_message_and_the_rerun_completes(
    e2e, make_dag, figures, task_events, retry_after_format
):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    expected = truth(fake, company, start=ALL_START, end=ALL_END)
    wait_past_midnight_utc()
    # The quota runs out mid-read, after files were already completed in S3 (1 MiB files).
    fake.configure(daily_quota=12, retry_after_format=retry_after_format)
    dag = extract(make_dag, f"rel_quota_{retry_after_format.replace('-', '_')}", company, bucket, window=ALL,
                  compression="none", max_file_size=1024 * 1024, hook_params={"page_size": 100, "concurrency": 1})  # fmt: skip
    dr = dag.test()
    assert task_states(dr) == {"extract": "failed"}
    stats = fake.stats()
    # Failed at once: the wait past the cap was refused, not slept, and the 429 was not retried.
    assert stats["by_status"].get("429") == 1, stats["by_status"]
    message = task_events.error_text()
    assert "daily quota" in message and "max_retry_wait" in message and "rerun after" in message, message
    assert re.search(r"resets at \d{4}-\d\d-\d\d 00:00:0\d UTC", message), message  # when to rerun
    no_manifest(s3, bucket, folder(company, start=ALL_START, end=ALL_END))

    fake.configure(daily_quota=None)
    rerun = dag.test()
    assert task_states(rerun) == {"extract": "success"}
    figures.check_window(f"daily quota past the cap ({retry_after_format}), then rerun", s3, bucket,
                         folder(company, start=ALL_START, end=ALL_END), expected)  # fmt: skip


# -- Codat: transient failures ---------------------------------------------------------------------


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
@pytest.mark.parametrize(
    ("case", "knobs", "hook_params"),
    [
        ("500 on the first requests", {"fail_5xx": 4, "fail_5xx_status": 500}, {}),
        (
            "503 on one middle page, in parallel",
            {"fail_5xx": 4, "fail_5xx_status": 503, "fail_5xx_path": "?page=3&"},
            {},
        ),
        ("connection dropped mid-body", {"drop_connection": 3}, {}),
        ("connection dropped mid-body, middle page", {"drop_connection": 3, "drop_connection_path": "?page=5&"}, {}),
        ("read timeout", {"slow_response": 2, "slow_response_s": 3, "slow_response_path": "?page=4&"}, {"timeout": 1}),
        ("truncated JSON body", {"truncate_body": 3}, {}),
        ("truncated JSON body, middle page", {"truncate_body": 3, "truncate_body_path": "?page=6&"}, {}),
    ],
    ids=["500", "503-middle-page", "drop", "drop-middle-page", "read-timeout", "truncated", "truncated-middle-page"],
)
def test_transient_failures_are_retried_without_gaps_or_duplicates(e2e, make_dag, figures, case, knobs, hook_params):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[1]
    expected = truth(fake, company)
    fake.configure(**knobs)
    fault = next(k for k in knobs if k in ("fail_5xx", "drop_connection", "slow_response", "truncate_body"))
    dag = extract(
        make_dag, "rel_transient", company, bucket, hook_params={"page_size": 25, "concurrency": 4, **hook_params}
    )
    dr = dag.test()
    assert task_states(dr) == {"extract": "success"}
    assert fake.stats()["faults"][fault] == knobs[fault]  # every armed fault really hit the read
    check = figures.check_window(case, s3, bucket, folder(company), expected)
    assert check.manifest["retries"] >= knobs[fault]
    if fault == "slow_response":  # the requests given up on are still being served: let them end
        wait_for_requests(fake, knobs["slow_response_path"], knobs["slow_response"] + 1)


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
def test_persistent_server_errors_fail_clearly_leave_nothing_and_the_rerun_completes(
    e2e, make_dag, figures, task_events
):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    expected = truth(fake, company, start=ALL_START, end=ALL_END)
    # Page 8 always fails, after 1 MiB files were completed in S3 from pages 1..7.
    fake.configure(fail_5xx=1000, fail_5xx_status=503, fail_5xx_path="?page=8&")
    dag = extract(make_dag, "rel_5xx_for_good", company, bucket, window=ALL, compression="none",
                  max_file_size=1024 * 1024, hook_params={"page_size": 100, "concurrency": 1, "max_retries": 2})  # fmt: skip
    dr = dag.test()
    assert task_states(dr) == {"extract": "failed"}
    assert fake.stats()["faults"]["fail_5xx"] == 3  # the first try and max_retries=2 more
    message = task_events.error_text()
    assert "Codat answered 503 to GET /companies/" in message and "correlationId" in message, message
    no_manifest(s3, bucket, folder(company, start=ALL_START, end=ALL_END))

    fake.configure(fail_5xx=0)
    assert task_states(dag.test()) == {"extract": "success"}
    figures.check_window("503 for good on page 8 (failed, nothing left), then rerun", s3, bucket,
                         folder(company, start=ALL_START, end=ALL_END), expected)  # fmt: skip


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
def test_a_failed_rerun_leaves_the_last_complete_dataset_intact(e2e, make_dag, figures):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    window_folder = folder(company, start=ALL_START, end=ALL_END)
    expected = truth(fake, company, start=ALL_START, end=ALL_END)
    dag = extract(make_dag, "rel_failed_rerun", company, bucket, window=ALL, compression="none",
                  max_file_size=1024 * 1024, hook_params={"page_size": 100, "concurrency": 1, "max_retries": 1})  # fmt: skip
    assert task_states(dag.test()) == {"extract": "success"}
    first = figures.check_window("first run of a window", s3, bucket, window_folder, expected)
    # A rerun fails on page 8, after completing files of its own: they go, the first run's stay.
    fake.configure(fail_5xx=1000, fail_5xx_path="?page=8&")
    assert task_states(dag.test()) == {"extract": "failed"}
    after = figures.check_window("a failed rerun (503 for good on page 8) leaves the first run's dataset",
                                 s3, bucket, window_folder, expected)  # fmt: skip
    assert after.manifest == first.manifest  # untouched, and every object it lists still there


@pytest.mark.fake_codat(companies=6, records={"bankAccounts": 3, "bankTransactions": 300})
def test_every_fault_at_once_on_the_bank_transactions_walk(e2e, make_dag, figures):
    """connections -> bank accounts -> bank transactions, with 429, 5xx, drops and truncation anywhere."""
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[4]  # two Accounting connections, three bank accounts each
    expected = []
    for conn in fake.connections(company):
        if conn["sourceType"] != "Accounting" or conn["status"] == "PendingAuth":
            continue
        for account in fake.bank_account_ids(company, conn["id"]):
            records = fake.records(company, "bankTransactions", connection_id=conn["id"], bank_account_id=account)
            expected += [{**r, "_connectionId": conn["id"], "_bankAccountId": account} for r in in_window(records)]
    assert len({r["_connectionId"] for r in expected}) == 2
    # Each fault on another step of the walk (no single request failing more than max_retries).
    fake.configure(
        fail_429=2, fail_429_path="/connections?", retry_after_s=1,
        fail_5xx=3, fail_5xx_path="/data/bankAccounts?",
        drop_connection=3, drop_connection_path="/bankTransactions?page=2&",
        truncate_body=3, truncate_body_path="/bankTransactions?page=1&",
    )  # fmt: skip
    dag = extract(make_dag, "rel_walk", company, bucket, data_type="bankTransactions",
                  hook_params={"page_size": 10, "concurrency": 3})  # fmt: skip
    dr = dag.test()
    assert task_states(dr) == {"extract": "success"}
    assert fake.stats()["faults"] == {"fail_429": 2, "fail_5xx": 3, "drop_connection": 3, "truncate_body": 3}
    figures.check_window("every fault at once, bankTransactions walk", s3, bucket,
                         folder(company, "bankTransactions"), expected)  # fmt: skip


# -- Codat: the page-shift problem -----------------------------------------------------------------


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000})
@pytest.mark.parametrize(
    ("concurrency", "after_page", "count"),
    [(1, 2, 5), (4, 2, 5), (4, 3, 60), (1, 3, 60)],
    ids=["c1-shift-5", "c4-shift-5", "c4-shift-60", "c1-shift-60"],
)
def test_records_modified_during_paging_lose_no_other_record(
    e2e, make_dag, figures, capfd, concurrency, after_page, count
):
    """
    After page K is served, ``count`` records of pages 1..K are modified: they leave the window and
    every later record moves ``count`` places back, so a naive reader skips ``count`` records. The
    hook must notice (totalResults changes) and collect them, without writing anything twice.
    """
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    before = truth(fake, company)
    fake.configure(mutate_after_page=after_page, mutate_count=count)
    dag = extract(make_dag, "rel_shift", company, bucket, hook_params={"page_size": 25, "concurrency": concurrency})
    capfd.readouterr()
    dr = dag.test()
    out, err = capfd.readouterr()
    assert task_states(dr) == {"extract": "success"}
    (mutation,) = fake.stats()["mutations"]
    moved = set(mutation["ids"])
    assert len(moved) == count
    # The moved records left the window: the fake's truth for it lost them, and shifted.
    assert not moved & {r["id"] for r in truth(fake, company)}
    assert "changed during the read" in out + err  # the shift was detected, not missed by luck
    # Every other record of the window exactly once; a moved record at most once, as it was read.
    stay = [r for r in before if r["id"] not in moved]
    left = [r for r in before if r["id"] in moved]
    figures.check_window(f"page shift: {count} records modified after page {after_page}, concurrency {concurrency}",
                         s3, bucket, folder(company), stay, may_contain=left)  # fmt: skip


@pytest.mark.fake_codat(companies=2, records={"invoices": 1000})
@pytest.mark.parametrize(
    ("added", "after_page"),
    [
        (50, 2),
        pytest.param(
            300,
            20,
        ),
    ],
    ids=["sync-adds-50-after-page-2", "sync-adds-300-after-page-20"],
)
def test_records_added_during_a_full_read_are_not_written_twice(fake_codat, codat_conn_env, figures, added, after_page):
    """
    The other direction of the page-shift problem. A full read has no modifiedDate filter, so a
    Codat sync during the read adds records to the result set; their random ids land all through
    the id order and push later records forward, so pages read after the sync start with records
    already read. Hook level over real HTTP, concurrency 1: pages are fetched as they are consumed,
    so the sync lands exactly after page K.
    """
    company = fake_codat.company_ids()[0]
    before = fake_codat.records(company, "invoices")
    hook = CodatHook(page_size=25, concurrency=1, **FAST)
    records, new_ids = [], set()
    for number, page in enumerate(hook.iter_pages(company, "invoices"), 1):
        records += page.records
        if number == after_page:
            new_ids = set(fake_codat.add_records(company, "invoices", added))
    new = [r for r in fake_codat.records(company, "invoices") if r["id"] in new_ids]
    assert len(new) == added
    figures.compare(f"full read while a sync adds {added} records after page {after_page}", before, records,
                    may_contain=new, key=lambda r: r["id"])  # fmt: skip


@pytest.mark.fake_codat(companies=2, records={"invoices": 3000}, dates_only=True)
def test_codat_refusing_timestamps_still_lands_exactly_the_window(e2e, make_dag, figures):
    """
    Codat's strict reading (dates only in queries): the operator reads whole days and filters the
    window itself. With bounds inside days, a page shift and a 503 on the way, the window must
    still hold exactly its records.
    """
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    start, end = START + timedelta(hours=6), END - timedelta(hours=6)
    before = truth(fake, company, start=start, end=end)
    fake.configure(mutate_after_page=2, mutate_count=10, fail_5xx=2, fail_5xx_path="?page=4&")
    window = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    dag = extract(make_dag, "rel_dates_only", company, bucket, window=window,
                  hook_params={"page_size": 25, "concurrency": 4})  # fmt: skip
    dr = dag.test()
    assert task_states(dr) == {"extract": "success"}
    stats = fake.stats()
    assert stats["by_status"].get("400") == 1 and stats["faults"]["fail_5xx"] == 2  # refused, then whole days
    moved = set(stats["mutations"][0]["ids"])
    check = figures.check_window(
        "Codat refuses timestamps: whole days filtered client-side, page shift and 503 on the way",
        s3, bucket, folder(company, start=start, end=end),
        [r for r in before if r["id"] not in moved], may_contain=[r for r in before if r["id"] in moved],
    )  # fmt: skip
    assert check.manifest["window_filtered_client_side"] is True
    assert check.manifest["query"] == "modifiedDate>=2024-02-01&&modifiedDate<2024-02-15"


# -- S3 ----------------------------------------------------------------------------------------------

#: 6,000 invoices of about 2.2 KB: 13 MiB uncompressed, so one file is a multipart upload of an
#: 8 MiB part and a 5 MiB last part (the writer's default part size).
MULTIPART = {"companies": 2, "records": {"invoices": 6000}}


def _multipart_dag(make_dag, dag_id, company, bucket, **kwargs):
    return extract(make_dag, dag_id, company, bucket, window=ALL, compression="none",
                   hook_params={"page_size": 500, "concurrency": 2}, **kwargs)  # fmt: skip


@pytest.mark.fake_codat(**MULTIPART)
@pytest.mark.parametrize(
    ("failures", "retried_by"),
    [(1, "botocore"), (3, "the writer")],
    ids=["fails-once", "fails-past-botocore-retries"],
)
def test_part_upload_failing_is_retried(e2e, s3_proxy, make_dag, figures, failures, retried_by):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    expected = truth(fake, company, start=ALL_START, end=ALL_END)
    # botocore tries each request twice (the connection's retries), the writer three times over.
    fault = s3_proxy.add(Fault("UploadPart", status=500, code="InternalError", times=failures))
    dr = _multipart_dag(make_dag, "rel_part_retry", company, bucket).test()
    assert task_states(dr) == {"extract": "success"}
    assert fault.injected == failures
    parts = s3_proxy.operations("UploadPart")
    assert len([p for p in parts if not p.injected]) == 2  # both parts of the file went up in the end
    assert not s3_proxy.operations("AbortMultipartUpload")
    figures.check_window(f"S3 UploadPart failing {failures}x (retried by {retried_by})", s3, bucket,
                         folder(company, start=ALL_START, end=ALL_END), expected)  # fmt: skip
    assert_no_pending_uploads(s3, bucket)


@pytest.mark.fake_codat(**MULTIPART)
def test_part_upload_failing_for_good_aborts_the_upload_and_fails_clearly(e2e, s3_proxy, make_dag, task_events):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    s3_proxy.add(Fault("UploadPart", status=500, code="InternalError", times=None))
    dr = _multipart_dag(make_dag, "rel_part_for_good", company, bucket).test()
    assert task_states(dr) == {"extract": "failed"}
    message = task_events.error_text()
    key = f"{folder(company, start=ALL_START, end=ALL_END)}/attempt="
    assert f"s3://{bucket}/{key}" in message and "upload_part (part 1) failed after 3 attempts" in message, message
    assert "InternalError" in message and "multipart upload was aborted" in message, message
    assert len(s3_proxy.operations("UploadPart")) == 6  # 3 writer attempts x 2 botocore attempts
    assert [a.status for a in s3_proxy.operations("AbortMultipartUpload")] == [204]
    assert not s3_proxy.operations("CompleteMultipartUpload")
    no_manifest(s3, bucket, folder(company, start=ALL_START, end=ALL_END))
    assert not read_objects(s3, bucket)


@pytest.mark.fake_codat(companies=2, records={"invoices": 200})
def test_access_denied_on_writes_fails_clearly_and_leaves_nothing(e2e, s3_proxy, make_dag, task_events):
    """The bucket is visible (HeadBucket passes) but PutObject is denied: a clear failure, nothing left."""
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    s3_proxy.add(Fault("PutObject", status=403, code="AccessDenied", times=None))
    dr = extract(make_dag, "rel_put_denied", company, bucket).test()
    assert task_states(dr) == {"extract": "failed"}
    message = task_events.error_text()
    assert f"s3://{bucket}/" in message and "AccessDenied" in message, message
    assert len(s3_proxy.operations("PutObject")) == 1  # AccessDenied is not retried
    no_manifest(s3, bucket, folder(company))


@pytest.mark.fake_codat(companies=2)
@pytest.mark.parametrize("problem", ["missing", "access-denied"])
def test_bucket_missing_or_denied_fails_before_any_codat_call(e2e, s3_proxy, make_dag, task_events, problem):
    fake, bucket = e2e["fake"], e2e["bucket"]
    company = fake.company_ids()[0]
    if problem == "missing":
        bucket = "reliability-no-such-bucket"
        hint = "does not exist: create it, or fix s3_bucket"
    else:
        s3_proxy.add(Fault("*", status=403, code="AccessDenied", times=None))
        hint = "is not accessible with AWS connection 'aws_default' (access denied)"
    dr = extract(make_dag, f"rel_bucket_{problem.replace('-', '_')}", company, bucket).test()
    assert task_states(dr) == {"extract": "failed"}
    message = task_events.error_text()
    assert f"S3 bucket {bucket!r} {hint}" in message and "Nothing was read from Codat" in message, message
    assert fake.stats()["requests"] == 0  # not one Codat call
    assert [s.operation for s in s3_proxy.log] == ["HeadBucket"]


# -- The worker killed mid-upload ---------------------------------------------------------------------


@pytest.mark.fake_codat(companies=2, records={"invoices": 12000})
def test_worker_killed_mid_upload_then_rerun(e2e, make_dag, figures, dags_folder, tmp_path):
    """
    After a first complete run of the window, ``airflow dags test`` reruns it in a subprocess and
    is SIGKILLed mid-upload: one file of the attempt complete in S3, the next one an open
    multipart upload (part 1 sent), the read stalled on page 22. Meanwhile readers must still
    find the first run's complete dataset. The next rerun must land the complete dataset, count
    nothing of the killed attempt, and leave no pending multipart upload.
    """
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    company = fake.company_ids()[0]
    window_folder = folder(company, start=ALL_START, end=ALL_END)
    expected = truth(fake, company, start=ALL_START, end=ALL_END)
    # 12,000 invoices are 24 pages of about 1 MiB. Files roll at 12 MiB: file 0 (an 8 MiB part and
    # a 4 MiB last part) is complete after page 12; file 1 sends its first 8 MiB part with page 20.
    dag = extract(make_dag, "rel_sigkill", company, bucket, window=ALL, compression="none",
                  max_file_size=12 * 1024 * 1024, hook_params={"page_size": 500, "concurrency": 1})  # fmt: skip
    # Page 22 stalls for 8 s, so the kill lands in that state whatever the machine's speed.
    assert task_states(dag.test()) == {"extract": "success"}  # the window's first, complete run
    first = figures.check_window("first run of a window, before a run killed mid-upload", s3, bucket,
                                 window_folder, expected)  # fmt: skip
    fake.configure(slow_response=1, slow_response_s=8, slow_response_path="?page=22&")
    log_path = tmp_path / "dags-test.log"
    env = airflow_env(Path(os.environ["AIRFLOW_HOME"]), dags_folder)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["airflow", "dags", "test", "rel_sigkill"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not fake.stats()["faults"].get("slow_response"):
                assert process.poll() is None, f"airflow dags test ended early:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"never reached page 22:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.1)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # our own child's session, by its id
            process.wait(30)
    assert process.returncode == -signal.SIGKILL
    first_files = {f["key"] for f in first.manifest["files"]}
    (stale,) = set(read_objects(s3, bucket, window_folder)) - first_files - {f"{window_folder}/_manifest.json"}
    assert stale.endswith("/part-00000.jsonl")  # the killed attempt's completed file 0
    (left,) = pending_uploads(s3, bucket, window_folder)  # and its open upload of file 1
    assert left["Key"].endswith("/part-00001.jsonl")
    # Meanwhile a reader still finds the first run's complete dataset, and nothing of the killed one.
    during = figures.check_window("while a rerun lies killed mid-upload, the window still reads complete", s3,
                                  bucket, window_folder, expected, allow_unlisted=True)  # fmt: skip
    assert during.manifest == first.manifest

    rerun = dag.test()
    assert task_states(rerun) == {"extract": "success"}
    check = figures.check_window("worker SIGKILLed mid multipart upload, then rerun", s3, bucket, window_folder,
                                 expected)  # fmt: skip
    assert stale not in [f["key"] for f in check.manifest["files"]]  # nothing of the killed attempt counted
    assert xcom(rerun, "extract", key="codat_summary")["records"] == len(expected)
    # The killed worker's stalled request is still being served: let it end before this test does.
    wait_for_requests(fake, "?page=22&", 2)
    assert_no_pending_uploads(s3, bucket, window_folder)
