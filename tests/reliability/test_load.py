"""Load: 1,000 companies listed across pages, and 100 concurrent extraction tasks under Codat's per-company limit.

The fake Codat API enforces Codat's limit of 10 concurrent requests per company (one more gets a
429 with ``Retry-After: 1``) and counts every 429 it answers.

Why threads, not an Airflow executor: ``dag.test()`` runs task instances one after another, and a
LocalExecutor in Airflow 3 needs a scheduler and an API server for its workers, several processes
that would not fit this suite's time on a 2-core machine. 100 threads, each running the real
``CodatToS3Operator.execute()`` with a task context of its own (map index, try number, XCom), are
what 100 concurrent mapped task instances do to Codat and S3: 100 hooks, 100 S3 clients, 100
streams of pages, all at once. A ``threading.Barrier`` releases them together; an optional
semaphore plays the Airflow pool.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_codat.hooks.codat import CodatHook
from airflow_provider_codat.transfers.codat_to_s3 import SUMMARY_XCOM_KEY, CodatToS3Operator
from tests.reliability.helpers import FAST, folder, in_window

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reliability")]

ALL_START, ALL_END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)


@pytest.mark.fake_codat(companies=1000)
def test_thousand_companies_listed_across_pages(fake_codat, codat_conn_env, figures):
    # Bumps on the way: a 429 burst on one page, a connection dropped mid-body on another.
    fake_codat.configure(fail_429=3, fail_429_path="?page=4&", drop_connection=2, drop_connection_path="?page=7&")
    hook = CodatHook(page_size=100, concurrency=4, **FAST)
    listed = list(hook.list_companies())
    truth = {company_id: fake_codat.company(company_id) for company_id in fake_codat.company_ids()}
    assert hook.stats["pages"] == 10 and fake_codat.stats()["faults"] == {"fail_429": 3, "drop_connection": 2}
    figures.compare("1,000 companies listed across 10 pages (429s, dropped connection)", truth.values(), listed,
                    key=lambda c: c["id"])  # fmt: skip
    ids = [c["id"] for c in listed]
    assert ids == sorted(truth)  # in the order asked for (orderBy=id), pages stitched in order
    assert all(company == truth[company["id"]] for company in listed)  # exactly as Codat has them


class _TaskInstance:
    """What the operator uses of a mapped task instance: its map index, try number and XCom."""

    def __init__(self, map_index: int) -> None:
        self.map_index = map_index
        self.try_number = 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def _run_mapped(operators: list[CodatToS3Operator], pool_slots: int | None) -> list[tuple[str, Any]]:
    """Run every operator's execute() in its own thread, all released at once; return (outcome, value) each."""
    barrier = threading.Barrier(len(operators))
    pool = threading.BoundedSemaphore(pool_slots) if pool_slots else None

    def run(index: int) -> tuple[str, Any]:
        ti = _TaskInstance(index)
        context = {"ti": ti, "run_id": "load__2024-04-01", "dag_run": None}
        barrier.wait(timeout=120)
        try:
            if pool is None:
                operators[index].execute(context)
            else:
                with pool:  # an Airflow pool: the task waits for a slot before it runs
                    operators[index].execute(context)
        except Exception as error:  # noqa: BLE001 - reported per task below
            return "failed", error
        return "success", ti.xcom[SUMMARY_XCOM_KEY]

    with ThreadPoolExecutor(max_workers=len(operators), thread_name_prefix="mapped-task") as threads:
        return list(threads.map(run, range(len(operators)), timeout=240))


#: Codat-like latency, so requests of one company overlap at the fake and its limit can bite.
LATENCY_MS = 50
SHARED_TYPES = ("invoices", "bills", "payments", "customers", "suppliers", "creditNotes", "billPayments",
                "journalEntries", "accounts", "items")  # fmt: skip


def _operators(plan, bucket: str, concurrency: int) -> list[CodatToS3Operator]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    # One S3 client for the 100 tasks (boto3 clients are thread-safe): creating 100 takes 17 s of
    # this machine's CPU, which would measure boto3, not Codat's limits.
    s3_client = S3Hook(aws_conn_id="aws_default", config=Config(max_pool_connections=100)).get_conn()
    operators = []
    for company, data_type in plan:
        operator = CodatToS3Operator(
            task_id="extract",
            company_id=company,
            data_type=data_type,
            s3_bucket=bucket,
            window_start=ALL_START.isoformat(),
            window_end=ALL_END.isoformat(),
            hook_params={**FAST, "page_size": 10, "concurrency": concurrency},
        )
        operator.s3_client = s3_client
        operators.append(operator)
    return operators


@pytest.mark.fake_codat(companies=120, records_per_type=100, latency_ms=LATENCY_MS)
@pytest.mark.parametrize(
    ("layout", "pool_slots", "concurrency"),
    [
        # 100 companies, one task each, all running at once: each hook keeps to its company's
        # limit by itself (concurrency 10 = Codat's limit).
        ("100 companies x 1 data type, no pool, concurrency 10", None, 10),
        # 10 companies x 10 data types, company-major as the example DAG plans them, so the
        # running tasks share companies: pool 5 x concurrency 2 keep any company at <= 10.
        ("10 companies x 10 data types, pool 5 x concurrency 2", 5, 2),
        # The same without the pool, and concurrency 5: up to 10 tasks x 5 = 50 requests on one
        # company. The fake answers 429 above 10; the hooks wait and retry, every task completes.
        ("10 companies x 10 data types, no pool, concurrency 5 (control)", None, 5),
    ],
    ids=["one-task-per-company", "shared-companies-pooled", "shared-companies-unpooled-control"],
)
def test_hundred_concurrent_mapped_tasks_stay_within_the_per_company_limit(
    e2e, figures, layout, pool_slots, concurrency
):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    assert fake.config.concurrency_limit == 10  # Codat's per-company limit, enforced by the fake
    if "100 companies" in layout:
        companies = [c for c in fake.company_ids() if fake.availability(c, "invoices") == "available"]
        plan = [(company, "invoices") for company in companies[:100]]
    else:
        companies = [
            c for c in fake.company_ids() if all(fake.availability(c, dt) == "available" for dt in SHARED_TYPES)
        ]
        plan = [(company, data_type) for company in companies[:10] for data_type in SHARED_TYPES]
    assert len(plan) == 100
    fake.warm(sorted({c for c, _ in plan}), sorted({d for _, d in plan}))
    if "control" in layout:
        fake.configure(latency_ms=300)  # tasks of a company surely overlap, whatever the CPU contention
    operators = _operators(plan, bucket, concurrency)

    started = time.monotonic()
    outcomes = _run_mapped(operators, pool_slots)
    elapsed = time.monotonic() - started

    failed = [(plan[i], value) for i, (outcome, value) in enumerate(outcomes) if outcome != "success"]
    assert not failed, f"{len(failed)} of 100 tasks failed, e.g. {failed[:3]}"
    stats = fake.stats()
    requests, rate_limited = stats["requests"], stats["rate_limited"]
    peak = max(stats["max_concurrency_by_company"].values())
    print(f"{layout}: 100 tasks in {elapsed:.1f}s, {requests} requests, {rate_limited} answered 429, peak {peak}")
    figures.note(layout, {"seconds": round(elapsed, 1), "requests": requests, "answered_429": rate_limited,
                          "peak_requests_in_flight_per_company": peak})  # fmt: skip
    if "control" in layout:
        assert rate_limited > 0 and peak > 10  # the limit is real: going over it is answered with 429s
    else:
        assert peak > 1  # requests of one company did overlap: the limit was within reach
        # The hook and the pool keep within the limit: 429s stay a rounding error of the traffic.
        assert rate_limited <= requests // 100, f"{rate_limited} 429s in {requests} requests"
    for (company, data_type), (_, summary) in zip(plan, outcomes, strict=True):
        expected = in_window(fake.records(company, data_type), ALL_START, ALL_END)
        assert summary["records"] == len(expected)
        figures.check_window(f"load: {layout}", s3, bucket, folder(company, data_type, ALL_START, ALL_END), expected)
