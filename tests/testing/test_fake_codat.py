"""Tests of the fake Codat API, over real HTTP with a plain ``requests`` client.

They pin what the hook, the operator, the demo and the benchmarks rely on: Codat's paging
envelope, query language, errors and sync states, every fault knob, and record shapes valid against
the schemas extracted from Codat's OpenAPI specs (``codat_schemas/``, written by
``scripts/extract_codat_schemas.py``).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from airflow_provider_codat.data_types import DATA_TYPES, Scope
from airflow_provider_codat.testing.fake_codat import FakeCodat, FakeCodatConfig

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parent / "codat_schemas"
ERROR_KEYS = {"statusCode", "service", "error", "correlationId", "canBeRetried", "detailedErrorCode", "validation"}
WINDOW = "modifiedDate>=2024-02-01T00:00:00Z&&modifiedDate<2024-03-01T00:00:00Z"


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(key.encode()).decode()


@pytest.fixture
def api(fake_codat: FakeCodat) -> requests.Session:
    """A session authenticated with the fake's key."""
    session = requests.Session()
    session.headers["Authorization"] = _basic(fake_codat.api_key)
    return session


def get(api: requests.Session, fake: FakeCodat, path: str, **params: Any) -> requests.Response:
    return api.get(f"{fake.url}{path}", params=params, timeout=10)


def company_with(fake: FakeCodat, **connection: str) -> str:
    """The first company having a connection with these fields (e.g. ``sourceType="Banking"``)."""
    for company_id in fake.company_ids():
        if any(all(c[k] == v for k, v in connection.items()) for c in fake.connections(company_id)):
            return company_id
    raise AssertionError(f"no company with a connection {connection}")


def connection_of(fake: FakeCodat, company_id: str, source_type: str) -> str:
    return next(c["id"] for c in fake.connections(company_id) if c["sourceType"] == source_type)


def assert_codat_error(response: requests.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["statusCode"] == status
    assert message in body["error"]
    assert body["canBeRetried"] == "Unknown" and body["detailedErrorCode"] == 0 and body["validation"] is None
    assert len(body["correlationId"]) == 32 and int(body["correlationId"], 16) >= 0
    return body


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text()))


# ----- paging -----


def test_companies_page_through_250(api, fake_codat):
    pages = [get(api, fake_codat, "/companies", page=n, pageSize=100).json() for n in (1, 2, 3, 4)]
    assert [len(p["results"]) for p in pages] == [100, 100, 50, 0]
    assert {p["totalResults"] for p in pages} == {250}
    assert [p["pageNumber"] for p in pages] == [1, 2, 3, 4]
    assert [r["id"] for p in pages for r in p["results"]] == fake_codat.company_ids()
    first, middle, last, beyond = (p["_links"] for p in pages)
    assert first == {
        "self": {"href": "/companies"},
        "current": {"href": "/companies?page=1&pageSize=100"},
        "next": {"href": "/companies?page=2&pageSize=100"},
    }
    assert middle == {
        "self": {"href": "/companies"},
        "current": {"href": "/companies?page=2&pageSize=100"},
        "previous": {"href": "/companies?page=1&pageSize=100"},
        "next": {"href": "/companies?page=3&pageSize=100"},
    }
    assert last == {
        "self": {"href": "/companies"},
        "current": {"href": "/companies?page=3&pageSize=100"},
        "previous": {"href": "/companies?page=2&pageSize=100"},
    }
    assert "next" not in beyond


def test_default_page_size_and_links_carry_query(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    fake_codat.configure(records={"invoices": 250})
    body = get(api, fake_codat, f"/companies/{company_id}/data/invoices", query="metadata.isDeleted!=true").json()
    assert body["pageSize"] == 100 and body["pageNumber"] == 1
    path = f"/companies/{company_id}/data/invoices"
    assert body["_links"]["next"]["href"] == f"{path}?page=2&pageSize=100&query=metadata.isDeleted%21%3Dtrue"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pageSize": 5001}, "between 1 and 5000"),
        ({"pageSize": 0}, "between 1 and 5000"),
        ({"page": 0}, "greater than or equal to 1"),
        ({"page": "x"}, "whole numbers"),
    ],
)
def test_bad_paging_is_400(api, fake_codat, params, message):
    assert_codat_error(get(api, fake_codat, "/companies", **params), 400, message)


def test_page_size_5000_is_allowed_and_cap_clamps(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    fake_codat.configure(company_records={"0": {"invoices": 2500}})
    path = f"/companies/{company_id}/data/invoices"
    assert len(get(api, fake_codat, path, pageSize=5000).json()["results"]) == 2500
    fake_codat.configure(page_size_cap=2000)
    body = get(api, fake_codat, path, pageSize=5000).json()
    assert (body["pageSize"], len(body["results"]), body["totalResults"]) == (2000, 2000, 2500)
    assert body["_links"]["next"]["href"] == f"{path}?page=2&pageSize=2000"


# ----- query language -----


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


FEB, MAR = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
QUERIES = {
    "modifiedDate>2024-02-01": lambda r: _instant(r["modifiedDate"]) > FEB,
    WINDOW: lambda r: FEB <= _instant(r["modifiedDate"]) < MAR,
    "modifiedDate>=2024-02-01T00:00:00.000Z&&modifiedDate<2024-03-01": lambda r: (
        FEB <= _instant(r["modifiedDate"]) < MAR
    ),
    "{totalAmount>100&&currency=GBP}||status=Paid": lambda r: (
        (r["totalAmount"] > 100 and r["currency"] == "GBP") or r["status"] == "Paid"
    ),
    "metadata.isDeleted!=true": lambda r: r["metadata"]["isDeleted"] is not True,
    "metadata.isDeleted=true": lambda r: r["metadata"]["isDeleted"] is True,
    "status!=Void&&amountDue<=500": lambda r: r["status"] != "Void" and r["amountDue"] <= 500,
    "customerRef.companyName~LTD": lambda r: "ltd" in r["customerRef"]["companyName"].lower(),
    "issueDate<2024-01-15": lambda r: _instant(r["issueDate"]) < datetime(2024, 1, 15, tzinfo=UTC),
}


@pytest.mark.parametrize("query", list(QUERIES))
def test_query_filters_like_codat(api, fake_codat, query):
    fake_codat.configure(records={"invoices": 300})
    company_id = fake_codat.company_ids()[1]
    truth = fake_codat.records(company_id, "invoices")
    expected = [r["id"] for r in truth if QUERIES[query](r)]
    assert 0 < len(expected) < len(truth)
    body = get(api, fake_codat, f"/companies/{company_id}/data/invoices", query=query, pageSize=5000).json()
    assert [r["id"] for r in body["results"]] == expected
    assert body["totalResults"] == len(expected)


@pytest.mark.parametrize(
    "query",
    [
        "status=",
        "{status=Paid",
        "status=Paid}",
        "status Paid",
        "&&status=Paid",
        "status=Paid||",
        "modifiedDate>2024-13-45",
        "a=" + "x" * 2048,
    ],
)
def test_malformed_query_is_400(api, fake_codat, query):
    company_id = fake_codat.company_ids()[0]
    response = get(api, fake_codat, f"/companies/{company_id}/data/invoices", query=query)
    assert_codat_error(response, 400, "Error parsing query")


def test_order_by(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    path = f"/companies/{company_id}/data/invoices"
    truth = fake_codat.records(company_id, "invoices")
    assert [r["id"] for r in get(api, fake_codat, path).json()["results"]] == [r["id"] for r in truth]
    ascending = get(api, fake_codat, path, orderBy="totalAmount").json()["results"]
    assert [r["totalAmount"] for r in ascending] == sorted(r["totalAmount"] for r in truth)
    by_id = get(api, fake_codat, path, orderBy="id").json()["results"]
    assert [r["id"] for r in by_id] == sorted(r["id"] for r in truth)
    descending = get(api, fake_codat, path, orderBy="-modifiedDate").json()["results"]
    assert [r["modifiedDate"] for r in descending] == sorted((r["modifiedDate"] for r in truth), reverse=True)


# ----- auth, errors, sync state -----


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(b"wrong").decode(),
        "Basic " + base64.b64encode(b"fake-codat-api-key:").decode(),
        "Bearer fake-codat-api-key",
        "Basic not-base64!",
    ],
)
def test_bad_key_is_401(fake_codat, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{fake_codat.url}/companies", headers=headers, timeout=10)
    assert_codat_error(response, 401, "Unauthorized")


def test_configured_api_key(fake_codat):
    fake_codat.configure(api_key="other-key")
    assert requests.get(f"{fake_codat.url}/companies", headers={"Authorization": _basic("other-key")}).ok


def test_unknown_company_is_404(api, fake_codat):
    for path in ("/companies/nope", "/companies/nope/data/invoices", "/companies/nope/dataStatus"):
        body = assert_codat_error(get(api, fake_codat, path), 404, "No company was found with ID nope")
        assert body["service"] == "ClientsApi"


def test_unsynced_is_409_until_a_queued_sync_completes(api, fake_codat):
    # Queued for the first half of the delay, Fetching for the second: windows of 1.5 s, wide enough
    # for a loaded machine to observe each state.
    fake_codat.configure(sync_delay_s=3.0)
    company_id = fake_codat.company_ids()[0]
    fake_codat.set_unsynced(company_id, "invoices")
    path = f"/companies/{company_id}/data/invoices"
    assert_codat_error(get(api, fake_codat, path), 409, "The data set has not been requested.")
    assert fake_codat.records(company_id, "invoices") == []
    assert get(api, fake_codat, f"/companies/{company_id}/dataStatus").json()["invoices"] == {"dataType": "invoices"}

    operation = api.post(f"{fake_codat.url}/companies/{company_id}/data/queue/invoices").json()
    validator("platform_pullOperation").validate(operation)
    assert (operation["dataType"], operation["status"], operation["isCompleted"]) == ("invoices", "Queued", False)
    seen, answers_while_fetching = [], set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = get(api, fake_codat, f"/companies/{company_id}/dataStatus").json()["invoices"]
        if not seen or seen[-1] != status["currentStatus"]:
            seen.append(status["currentStatus"])
        if status["currentStatus"] == "Complete":
            break
        if status["currentStatus"] == "Fetching":
            answers_while_fetching.add(get(api, fake_codat, path).status_code)
        time.sleep(0.05)
    assert seen == ["Queued", "Fetching", "Complete"]
    assert answers_while_fetching <= {409, 200} and 409 in answers_while_fetching
    assert status["latestSuccessfulSyncId"] == operation["id"]
    assert _instant(status["lastSuccessfulSync"]) <= datetime.now(UTC)
    assert get(api, fake_codat, path).status_code == 200
    history = get(api, fake_codat, f"/companies/{company_id}/data/history/{operation['id']}").json()
    assert history["isCompleted"] is True and history["status"] == "Complete"


def test_unsupported_is_404(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    platform = fake_codat.company(company_id)["dataConnections"][0]["platformName"]
    fake_codat.set_unsupported(company_id, "accounts")
    response = get(api, fake_codat, f"/companies/{company_id}/data/accounts")
    assert_codat_error(response, 404, f"Datatype chartOfAccounts not supported by platform(s) {platform}")
    status = get(api, fake_codat, f"/companies/{company_id}/dataStatus").json()["chartOfAccounts"]
    assert status["currentStatus"] == "NotSupported"
    assert fake_codat.availability(company_id, "accounts") == "unsupported"


def test_data_status_and_queue_all(api, fake_codat):
    company_id = company_with(fake_codat, sourceType="Banking")
    statuses = get(api, fake_codat, f"/companies/{company_id}/dataStatus").json()
    assert {"chartOfAccounts", "invoices", "bankTransactions", "banking-transactions", "company"} <= set(statuses)
    entry = validator("platform_dataStatus")
    for status in statuses.values():
        entry.validate(status)
        assert status["currentStatus"] == "Complete"
    response = api.post(f"{fake_codat.url}/companies/{company_id}/data/all")
    assert response.status_code == 204
    assert api.post(f"{fake_codat.url}/companies/{company_id}/data/queue/accounts").status_code == 400


def test_pending_auth_company_has_no_data(api, fake_codat):
    company_id = company_with(fake_codat, status="PendingAuth")
    assert get(api, fake_codat, f"/companies/{company_id}/dataStatus").json() == {}
    assert get(api, fake_codat, f"/companies/{company_id}/data/invoices").status_code == 409


def test_connection_mix_is_deterministic(fake_codat):
    kinds = [
        tuple(sorted((c["sourceType"], c["status"]) for c in fake_codat.connections(company_id)))
        for company_id in fake_codat.company_ids()
    ]
    assert kinds.count((("Accounting", "PendingAuth"),)) == 12
    assert kinds.count((("Accounting", "Unlinked"),)) == 12
    assert sum(k.count(("Accounting", "Linked")) == 2 for k in kinds) == 25
    assert sum(("Banking", "Linked") in k for k in kinds) == 76


def test_connection_scoped_types_and_bank_transactions(api, fake_codat):
    company_id = company_with(fake_codat, sourceType="Banking")
    accounting, banking = (
        connection_of(fake_codat, company_id, "Accounting"),
        connection_of(fake_codat, company_id, "Banking"),
    )
    connections = get(api, fake_codat, f"/companies/{company_id}/connections").json()
    assert [c["id"] for c in connections["results"]] == [c["id"] for c in fake_codat.connections(company_id)]
    base = f"/companies/{company_id}/connections/{accounting}/data"
    accounts = get(api, fake_codat, f"{base}/bankAccounts").json()["results"]
    assert [a["id"] for a in accounts] == fake_codat.bank_account_ids(company_id, accounting)
    for account in accounts[:2]:
        transactions = get(api, fake_codat, f"{base}/bankAccounts/{account['id']}/bankTransactions").json()
        assert transactions["totalResults"] == 20
        assert {t["accountId"] for t in transactions["results"]} == {account["id"]}
    assert_codat_error(get(api, fake_codat, f"{base}/bankAccounts/nope/bankTransactions"), 404, "nope")
    banking_accounts = get(api, fake_codat, f"/companies/{company_id}/connections/{banking}/data/banking-accounts")
    account_ids = {a["id"] for a in banking_accounts.json()["results"]}
    transactions = get(api, fake_codat, f"/companies/{company_id}/connections/{banking}/data/banking-transactions")
    assert {t["accountId"] for t in transactions.json()["results"]} <= account_ids
    wrong = get(api, fake_codat, f"/companies/{company_id}/connections/{banking}/data/bankAccounts")
    assert_codat_error(wrong, 404, "Datatype bankAccounts not supported by platform(s)")
    assert_codat_error(
        get(api, fake_codat, f"/companies/{company_id}/connections/nope/data/bankAccounts"),
        404,
        "Data connection nope not found",
    )
    assert get(api, fake_codat, f"/companies/{company_id}/data/bankAccounts").status_code == 404


def test_snapshots(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    info = get(api, fake_codat, f"/companies/{company_id}/data/info").json()
    assert info["companyName"] == fake_codat.company(company_id)["name"]
    report = get(
        api,
        fake_codat,
        f"/companies/{company_id}/data/financials/profitAndLoss",
        periodLength=3,
        periodsToCompare=4,
        startMonth="2024-03-01",
    ).json()
    assert [(r["fromDate"], r["toDate"]) for r in report["reports"]] == [
        ("2024-01-01T00:00:00", "2024-03-31T00:00:00"),
        ("2023-10-01T00:00:00", "2023-12-31T00:00:00"),
        ("2023-07-01T00:00:00", "2023-09-30T00:00:00"),
        ("2023-04-01T00:00:00", "2023-06-30T00:00:00"),
    ]
    assert report == fake_codat.snapshot(
        company_id, "profitAndLoss", {"periodLength": "3", "periodsToCompare": "4", "startMonth": "2024-03-01"}
    )
    # Codat's spec marks periodLength and periodsToCompare required for every financial report.
    for name in ("balanceSheet", "profitAndLoss", "cashFlowStatement"):
        response = get(api, fake_codat, f"/companies/{company_id}/data/financials/{name}", periodLength=1)
        assert_codat_error(response, 400, "periodsToCompare must be given.")
    response = get(api, fake_codat, f"/companies/{company_id}/data/financials/balanceSheet")
    assert_codat_error(response, 400, "periodLength and periodsToCompare must be given.")


# ----- schemas -----

_SCHEMA_TYPES = sorted(p.stem.removeprefix("data_") for p in SCHEMAS.glob("data_*.json"))


def _paths(fake: FakeCodat, name: str) -> str:
    dt = DATA_TYPES[name]
    company_id = company_with(fake, sourceType="Banking")
    if dt.scope is Scope.COMPANY:
        return f"/companies/{company_id}/{dt.path}"
    connection_id = connection_of(fake, company_id, dt.source_type)
    base = f"/companies/{company_id}/connections/{connection_id}/data"
    if dt.scope is Scope.BANK_ACCOUNT:
        return f"{base}/bankAccounts/{fake.bank_account_ids(company_id, connection_id)[0]}/bankTransactions"
    return f"{base}/{name}"


def test_every_list_type_has_a_schema():
    missing = {dt.name for dt in DATA_TYPES.values()} - set(_SCHEMA_TYPES)
    assert missing == {"itemReceipts"}  # no Codat spec holds a schema for it


@pytest.mark.parametrize("name", _SCHEMA_TYPES)
def test_responses_match_codat_schemas(api, fake_codat, name):
    body = get(api, fake_codat, _paths(fake_codat, name), **dict(DATA_TYPES[name].default_params)).json()
    record = validator(f"data_{name}")
    if DATA_TYPES[name].incremental:
        validator("platform_paging").validate(body)
        assert len(body["results"]) == 20
        for result in body["results"]:
            record.validate(result)
    else:
        record.validate(body)


def test_platform_objects_match_codat_schemas(api, fake_codat):
    company, connection = validator("platform_company"), validator("platform_connection")
    for result in get(api, fake_codat, "/companies", pageSize=250).json()["results"]:
        company.validate(result)
        for connection_document in result["dataConnections"]:
            connection.validate(connection_document)
    validator("platform_error").validate(get(api, fake_codat, "/companies/nope").json())


def test_invoices_look_like_the_sample(api, fake_codat):
    invoice = get(api, fake_codat, f"/companies/{fake_codat.company_ids()[0]}/data/invoices").json()["results"][0]
    assert list(invoice)[0] == "id" and list(invoice)[-3:-1] == ["metadata", "modifiedDate"]
    assert invoice["modifiedDate"].endswith("Z") and not invoice["sourceModifiedDate"].endswith("Z")
    assert invoice["lineItems"][0]["accountRef"]["id"]
    customers = {c["id"] for c in fake_codat.records(fake_codat.company_ids()[0], "customers")}
    assert invoice["customerRef"]["id"] in customers


# ----- rate limits and faults -----


def test_rate_limit_headers_count_down(api, fake_codat):
    first = get(api, fake_codat, "/companies", pageSize=1)
    second = get(api, fake_codat, "/companies", pageSize=1)
    assert first.headers["X-Rate-Limit-Limit"] == str(1000 * 251)
    assert int(first.headers["X-Rate-Limit-Remaining"]) - 1 == int(second.headers["X-Rate-Limit-Remaining"])
    reset = int(first.headers["X-Rate-Limit-Reset"])
    assert reset % 86400 == 0 and 0 < reset - time.time() <= 86400


def test_fail_429_with_path_filter(api, fake_codat):
    fake_codat.configure(fail_429=2, fail_429_path="/data/invoices", retry_after_s=7)
    company_id = fake_codat.company_ids()[0]
    assert get(api, fake_codat, "/companies").status_code == 200
    for _ in range(2):
        response = get(api, fake_codat, f"/companies/{company_id}/data/invoices")
        assert_codat_error(response, 429, "too many requests")
        assert response.headers["Retry-After"] == "7"
        assert "X-Rate-Limit-Remaining" in response.headers
    assert get(api, fake_codat, f"/companies/{company_id}/data/invoices").status_code == 200
    assert fake_codat.stats()["rate_limited"] == 2 and fake_codat.config.fail_429 == 0


def test_fail_429_retry_after_as_http_date(api, fake_codat):
    fake_codat.configure(fail_429=1, retry_after_s=30, retry_after_format="http-date")
    response = get(api, fake_codat, "/companies")
    assert response.status_code == 429
    wait = (parsedate_to_datetime(response.headers["Retry-After"]) - datetime.now(UTC)).total_seconds()
    assert 28 <= wait <= 32


def test_daily_quota(api, fake_codat):
    fake_codat.configure(daily_quota_exhausted=True)
    response = get(api, fake_codat, "/companies")
    assert_codat_error(response, 429, "Daily request quota")
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    fake_codat.configure(daily_quota_exhausted=False, daily_quota=3)
    assert [get(api, fake_codat, "/companies").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("status", [500, 503])
def test_fail_5xx(api, fake_codat, status):
    fake_codat.configure(fail_5xx=1, fail_5xx_status=status)
    assert_codat_error(get(api, fake_codat, "/companies"), status, "problem with our server")
    assert get(api, fake_codat, "/companies").status_code == 200


def test_drop_connection(api, fake_codat):
    fake_codat.configure(drop_connection=1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        get(api, fake_codat, "/companies")
    assert get(api, fake_codat, "/companies").status_code == 200
    assert fake_codat.stats()["faults"]["drop_connection"] == 1


def test_truncate_body(api, fake_codat):
    fake_codat.configure(truncate_body=1)
    response = get(api, fake_codat, "/companies")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()
    assert get(api, fake_codat, "/companies").json()["totalResults"] == 250


def test_slow_response_times_out_the_client(api, fake_codat):
    fake_codat.configure(slow_response=1, slow_response_s=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get(f"{fake_codat.url}/companies", timeout=0.2)
    assert get(api, fake_codat, "/companies").status_code == 200
    # The knob was spent on the first request: the second was answered without the delay.
    assert fake_codat.stats()["faults"] == {"slow_response": 1}
    assert fake_codat.config.slow_response == 0


def test_latency(api, fake_codat):
    fake_codat.configure(latency_ms=150)
    started = time.monotonic()
    get(api, fake_codat, "/companies", pageSize=1)
    assert time.monotonic() - started >= 0.15


def test_per_company_concurrency_limit(fake_codat):
    fake_codat.configure(latency_ms=400)
    company_id = fake_codat.company_ids()[0]
    barrier = threading.Barrier(12)
    responses: list[requests.Response] = []

    def call() -> None:
        barrier.wait()
        response = requests.get(
            f"{fake_codat.url}/companies/{company_id}",
            headers={"Authorization": _basic(fake_codat.api_key)},
            timeout=10,
        )
        responses.append(response)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limited = [r for r in responses if r.status_code == 429]
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 2
    assert all(r.headers["Retry-After"] == "1" for r in limited)
    stats = fake_codat.stats()
    # The first refused request counts while it is refused; whether a second one overlaps it is timing.
    assert 11 <= stats["max_concurrency"] == stats["max_concurrency_by_company"][company_id] <= 12
    assert stats["faults"]["concurrency_limit"] == 2


def test_mutate_after_page_shifts_later_pages(api, fake_codat):
    fake_codat.configure(records={"invoices": 300}, mutate_after_page=1, mutate_count=3)
    company_id = fake_codat.company_ids()[0]
    path = f"/companies/{company_id}/data/invoices"
    expected = [r["id"] for r in fake_codat.records(company_id, "invoices") if QUERIES[WINDOW](r)]
    pages = [get(api, fake_codat, path, query=WINDOW, page=n, pageSize=10).json() for n in range(1, 5)]
    seen = [r["id"] for p in pages for r in p["results"]]
    assert pages[0]["totalResults"] == len(expected) and pages[1]["totalResults"] == len(expected) - 3
    # Page 2 starts three records later: a client paging on misses them.
    assert seen[10:] == expected[13:43]
    (mutation,) = fake_codat.stats()["mutations"]
    assert mutation["ids"] == expected[:3] and mutation["page"] == 1
    moved = {r["id"]: r for r in fake_codat.records(company_id, "invoices")}
    assert all(_instant(moved[i]["modifiedDate"]) > MAR for i in mutation["ids"])
    assert fake_codat.config.mutate_after_page is None


def test_changing_records_between_runs(api, fake_codat):
    company_id = fake_codat.company_ids()[0]
    before = fake_codat.records(company_id, "invoices")
    changed = fake_codat.modify_records(company_id, "invoices", count=2, modified_date="2024-05-02T10:00:00Z")
    assert changed == [r["id"] for r in before[:2]]
    window = get(api, fake_codat, f"/companies/{company_id}/data/invoices", query="modifiedDate>=2024-05-01").json()
    assert [r["id"] for r in window["results"]] == changed
    deleted = fake_codat.delete_records(company_id, "invoices", [before[5]["id"]], modified_date="2024-05-03")
    added = fake_codat.add_records(company_id, "invoices", 3, modified_date="2024-05-04")
    after = fake_codat.records(company_id, "invoices")
    assert [r["id"] for r in after] == [r["id"] for r in before] + added
    assert after[5]["metadata"]["isDeleted"] is True and after[5]["id"] == deleted[0]
    window = get(api, fake_codat, f"/companies/{company_id}/data/invoices", query="modifiedDate>=2024-05-01").json()
    assert window["totalResults"] == 6
    fake_codat.reset()
    assert fake_codat.records(company_id, "invoices") == before


def test_admin_endpoints(fake_codat):
    admin = f"{fake_codat.url}/_fake"
    assert requests.post(f"{admin}/config", json={"fail_5xx": 1, "fail_5xx_status": 500}).json()["fail_5xx"] == 1
    assert requests.post(f"{admin}/config", json={"no_such_knob": 1}).status_code == 400
    assert (
        requests.get(f"{fake_codat.url}/companies", headers={"Authorization": _basic(fake_codat.api_key)}).status_code
        == 500
    )
    stats = requests.get(f"{admin}/stats").json()
    assert stats["by_status"] == {"500": 1} and stats["by_path"] == {"/companies": {"500": 1}}
    company_id = requests.get(f"{admin}/companies").json()[0]
    records = requests.get(f"{admin}/records", params={"companyId": company_id, "dataType": "invoices"}).json()
    assert records == fake_codat.records(company_id, "invoices")
    modified = requests.post(
        f"{admin}/records/modify",
        json={"companyId": company_id, "dataType": "invoices", "count": 1, "modifiedDate": "2024-06-01"},
    ).json()
    assert modified == [records[0]["id"]]
    availability = requests.post(
        f"{admin}/availability", json={"companyId": company_id, "dataType": "bills", "unsynced": True}
    ).json()
    assert availability == "unsynced"
    assert requests.post(f"{admin}/reset").status_code == 204
    assert requests.get(f"{admin}/stats").json()["requests"] == 0
    assert fake_codat.config.fail_5xx == 0


@pytest.mark.fake_codat(companies=3, records_per_type=5)
def test_marker_configures_the_fake(api, fake_codat):
    assert get(api, fake_codat, "/companies").json()["totalResults"] == 3
    assert len(fake_codat.records(fake_codat.company_ids()[0], "bills")) == 5


def test_codat_conn_env(codat_conn_env, fake_codat):
    import os

    assert json.loads(os.environ["AIRFLOW_CONN_CODAT_DEFAULT"]) == {
        "conn_type": "codat",
        "password": "fake-codat-api-key",
        "host": fake_codat.url,
    }


def test_data_is_deterministic_from_the_seed():
    one, two = FakeCodat(companies=4), FakeCodat(companies=4)
    other = FakeCodat(companies=4, seed=2)
    assert one.company_ids() == two.company_ids() != other.company_ids()
    company = one.company_ids()[0]
    assert one.records(company, "invoices") == two.records(company, "invoices")
    with pytest.raises(TypeError, match="no_such_knob"):
        FakeCodatConfig().replace(no_such_knob=1)


def test_platform_ids_for_connection_scoped_records():
    fake = FakeCodat(companies=1, platform_ids=True, records_per_type=3)
    company = fake.company_ids()[0]
    (accounting,) = [c for c in fake.connections(company) if c["sourceType"] == "Accounting"]
    assert [r["id"] for r in fake.records(company, "bankAccounts", connection_id=accounting["id"])] == ["1", "2", "3"]
    assert [r["id"] for r in fake.records(company, "bankTransactions", connection_id=accounting["id"],
                                         bank_account_id="2")] == ["1", "2", "3"]  # fmt: skip
    # Company-scoped records keep their UUIDs; references to bank accounts follow the platform's ids.
    assert all(len(r["id"]) == 36 for r in fake.records(company, "invoices"))
    transactions = fake.records(company, "accountTransactions", connection_id=accounting["id"])
    assert {t["bankAccountRef"]["id"] for t in transactions} <= {"1", "2", "3"}


def test_large_record_set_pages(api, fake_codat):
    fake_codat.configure(company_records={"0": {"invoices": 20_000}})
    company_id = fake_codat.company_ids()[0]
    path = f"/companies/{company_id}/data/invoices"
    first = get(api, fake_codat, path, query=WINDOW, pageSize=5000).json()
    second = get(api, fake_codat, path, query=WINDOW, pageSize=5000, page=2).json()
    assert second["totalResults"] == first["totalResults"] > 5000
    assert len(first["results"]) == 5000 and len(second["results"]) == first["totalResults"] - 5000
    assert not {r["id"] for r in first["results"]} & {r["id"] for r in second["results"]}


def test_command_line_server():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_codat.testing.fake_codat",
            "--port",
            "0",
            "--companies",
            "2",
            "--api-key",
            "cli-key",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("Fake Codat API listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        body = requests.get(f"{url}/companies", headers={"Authorization": _basic("cli-key")}, timeout=10).json()
        assert body["totalResults"] == 2
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
