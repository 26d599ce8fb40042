"""CodatHook against the fake Codat API over real HTTP: complete paging, retries, rate limits."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from airflow_provider_codat.exceptions import CodatAuthError, CodatPagingError, CodatRateLimitError
from airflow_provider_codat.hooks.codat import CodatHook
from airflow_provider_codat.query import window

pytestmark = pytest.mark.integration


def hook(**overrides):
    return CodatHook(retry_min_wait=0, **overrides)


@pytest.mark.fake_codat(companies=250)
def test_250_companies_across_pages(fake_codat, codat_conn_env):
    h = hook(page_size=40, concurrency=4)
    companies = list(h.list_companies())
    assert [c["id"] for c in companies] == sorted(fake_codat.company_ids())
    assert h.stats["pages"] == 7  # ceil(250 / 40)


@pytest.mark.fake_codat(companies=2, company_records={"0": {"invoices": 20000}})
def test_20000_invoices_nothing_lost_nothing_repeated(fake_codat, codat_conn_env):
    company = fake_codat.company_ids()[0]
    h = hook(page_size=500, concurrency=8)
    got = list(h.iter_records(company, "invoices"))
    ids = Counter(r["id"] for r in got)
    assert len(got) == 20000 and max(ids.values()) == 1
    assert sorted(got, key=lambda r: r["id"]) == sorted(fake_codat.records(company, "invoices"), key=lambda r: r["id"])
    assert h.stats["requests"] == 40 and h.stats["retries"] == 0
    assert fake_codat.stats()["max_concurrency"] <= 8


@pytest.mark.fake_codat(companies=2, company_records={"0": {"invoices": 3000}})
def test_window_query_is_applied_by_codat(fake_codat, codat_conn_env):
    from datetime import UTC, datetime

    company = fake_codat.company_ids()[0]
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 8, tzinfo=UTC)
    got = list(hook(page_size=200).iter_records(company, "invoices", query=window(start, end)))
    expected = [r for r in fake_codat.records(company, "invoices") if "2024-02-01" <= r["modifiedDate"] < "2024-02-08"]
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in expected) and expected


@pytest.mark.fake_codat(companies=2, company_records={"0": {"invoices": 1000}})
@pytest.mark.parametrize("retry_after_format", ["seconds", "http-date"])
def test_retry_after_is_honoured(fake_codat, codat_conn_env, retry_after_format):
    company = fake_codat.company_ids()[0]
    fake_codat.configure(fail_429=2, retry_after_s=1, retry_after_format=retry_after_format)
    h = hook(page_size=500, concurrency=1)
    started = time.monotonic()
    got = list(h.iter_records(company, "invoices"))
    elapsed = time.monotonic() - started
    assert len({r["id"] for r in got}) == 1000
    assert h.stats["rate_limited"] == 2 and h.stats["retries"] == 2
    # Two waits of Retry-After 1 s (an HTTP date has whole-second precision, so at least ~0 s each).
    if retry_after_format == "seconds":
        assert elapsed >= 2.0


@pytest.mark.fake_codat(companies=2, daily_quota_exhausted=True)
def test_daily_quota_fails_fast_with_the_reset_time(fake_codat, codat_conn_env):
    company = fake_codat.company_ids()[0]
    h = hook()
    with pytest.raises(CodatRateLimitError) as err:
        list(h.iter_records(company, "invoices"))
    # Failed at once: one request, no retry, so no wait for the quota to reset.
    assert fake_codat.stats()["requests"] == 1 and h.stats["retries"] == 0
    assert "the daily quota is probably spent. It resets at" in str(err.value)
    assert err.value.retry_at is not None and err.value.retry_at.hour == 0 and err.value.retry_at.minute == 0
    assert fake_codat.stats()["requests"] == 1


@pytest.mark.fake_codat(companies=2)
def test_bad_key_is_told_apart_from_unreachable(fake_codat, monkeypatch):
    import json
    import socket

    monkeypatch.setenv(
        "AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({"conn_type": "codat", "password": "wrong", "host": fake_codat.url})
    )
    ok, message = hook().test_connection()
    assert not ok and message.startswith("Codat rejected the API key: Codat refused the API key (401)")
    with pytest.raises(CodatAuthError):
        list(hook().list_companies())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_CODAT_DEFAULT",
        json.dumps({"conn_type": "codat", "password": "k", "host": f"http://127.0.0.1:{port}"}),
    )
    ok, message = hook().test_connection()
    assert (ok, message) == (
        False,
        f"Could not reach Codat: Could not reach Codat at http://127.0.0.1:{port} (GET /companies): "
        "ConnectionError: Connection refused.",
    )


@pytest.mark.fake_codat(companies=4)
def test_bank_transactions_walk_every_bank_account(fake_codat, codat_conn_env):
    company = next(c for c in fake_codat.company_ids() if fake_codat.connections(c))
    expected = []
    for conn in fake_codat.connections(company):
        if conn["sourceType"] != "Accounting" or conn["status"] == "PendingAuth":
            continue
        for account in fake_codat.bank_account_ids(company, conn["id"]):
            expected += [
                (conn["id"], account, r["id"])
                for r in fake_codat.records(
                    company, "bankTransactions", connection_id=conn["id"], bank_account_id=account
                )
            ]
    got = [
        (p.connection_id, p.bank_account_id, r["id"])
        for p in hook().iter_pages(company, "bankTransactions")
        for r in p.records
    ]
    assert sorted(got) == sorted(expected) and expected


def _canonical(records):
    return sorted(json.dumps(r, sort_keys=True) for r in records)


@pytest.mark.fake_codat(companies=1, records={"banking-accountBalances": 1200})
def test_records_without_an_id_are_read_complete_across_pages(fake_codat, codat_conn_env):
    # Balances have no id and repeat (account, date): an account can have many balances a day.
    company = fake_codat.company_ids()[0]
    expected = fake_codat.records(company, "banking-accountBalances")
    assert len({(r["accountId"], r["date"]) for r in expected}) < len(expected) == 1200
    h = hook(page_size=100, concurrency=4)
    got = list(h.iter_records(company, "banking-accountBalances"))
    assert _canonical(got) == _canonical(expected)
    assert h.stats["requests"] == 13 and h.stats["retries"] == 0  # the connections list, then 12 pages
    queries = [e["query"] for e in fake_codat.request_log() if e["path"].endswith("/banking-accountBalances")]
    assert len(queries) == 12 and all("orderBy=date" in q for q in queries)


@pytest.mark.fake_codat(companies=1, records={"banking-accountBalances": 1200})
def test_records_without_an_id_fail_when_their_set_moves_mid_read(fake_codat, codat_conn_env):
    from datetime import UTC, datetime

    company = fake_codat.company_ids()[0]
    fake_codat.configure(mutate_after_page=1, mutate_count=5)
    query = window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    with pytest.raises(CodatPagingError) as err:
        list(hook(page_size=100, concurrency=1).iter_records(company, "banking-accountBalances", query=query))
    assert "changed while being read (totalResults 1200 -> 1195, " in str(err.value)
    assert str(err.value).endswith(
        "Records without an id cannot be told apart, so the read cannot be repaired by re-reading without "
        "writing some twice: retry the task later."
    )
