"""Unit tests of CodatHook against requests-mock: settings, paging, retries, errors."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_codat.exceptions import (
    CodatAPIError,
    CodatAuthError,
    CodatBadRequestError,
    CodatConnectionError,
    CodatDataNotSyncedError,
    CodatDataTypeNotSupportedError,
    CodatDataUnavailableError,
    CodatInputError,
    CodatNoConnectionError,
    CodatNoDataError,
    CodatNotFoundError,
    CodatPagingError,
    CodatRateLimitError,
    CodatServerError,
    UnknownDataTypeError,
)
from airflow_provider_codat.hooks.codat import CodatHook, _parse_retry_after, validate_id

API_KEY = "unit-test-key-0123456789"
BASE = "https://api.codat.io"
COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"
CONN_A = "11111111-1111-4111-8111-111111111111"
CONN_B = "22222222-2222-4222-8222-222222222222"
CONN_BANK = "33333333-3333-4333-8333-333333333333"


def set_conn(monkeypatch, **fields):
    conn = {"conn_type": "codat", "password": API_KEY, **fields}
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps(conn))


@pytest.fixture(autouse=True)
def codat_conn(monkeypatch):
    set_conn(monkeypatch)


def hook(**overrides):
    return CodatHook(retry_min_wait=0, **overrides)


def envelope(results, page, page_size, total, path="/companies"):
    links = {"self": {"href": path}, "current": {"href": f"{path}?page={page}&pageSize={page_size}"}}
    if page * page_size < total:
        links["next"] = {"href": f"{path}?page={page + 1}&pageSize={page_size}"}
    if page > 1:
        links["previous"] = {"href": f"{path}?page={page - 1}&pageSize={page_size}"}
    return {"results": results, "pageNumber": page, "pageSize": page_size, "totalResults": total, "_links": links}


def paged(records, path):
    """A requests-mock callback serving ``records`` with Codat's paging."""

    def callback(request, context):
        qs = parse_qs(urlsplit(request.url).query)
        page, size = int(qs["page"][0]), int(qs["pageSize"][0])
        context.headers["X-Rate-Limit-Remaining"] = "999"
        return envelope(records[(page - 1) * size : page * size], page, size, len(records), path)

    return callback


def error_body(status, message):
    return {
        "statusCode": status,
        "service": "PublicApi",
        "error": message,
        "correlationId": "corr-123",
        "canBeRetried": "Unknown",
        "detailedErrorCode": 0,
        "validation": None,
    }


def page_numbers(m):
    return [int(parse_qs(urlsplit(r.url).query)["page"][0]) for r in m.request_history]


class TestSettings:
    def test_defaults_and_auth_header(self, requests_mock):
        requests_mock.get(f"{BASE}/companies", json=envelope([], 1, 2000, 0))
        h = CodatHook()
        assert h.settings.base_url == BASE
        assert (h.settings.page_size, h.settings.concurrency, h.settings.max_retries) == (2000, 8, 8)
        list(h.list_companies())
        sent = requests_mock.request_history[0]
        assert sent.headers["Authorization"] == "Basic " + base64.b64encode(API_KEY.encode()).decode()
        assert parse_qs(urlsplit(sent.url).query) == {"page": ["1"], "pageSize": ["2000"], "orderBy": ["id"]}
        assert sent.timeout == 60.0
        assert API_KEY not in repr(h.settings)

    def test_extras_and_overrides(self, monkeypatch):
        set_conn(monkeypatch, host="http://127.0.0.1:8123", extra={"page_size": "500", "concurrency": 4})
        h = CodatHook(concurrency=2, timeout=5)
        assert h.settings.base_url == "http://127.0.0.1:8123"
        assert (h.settings.page_size, h.settings.concurrency, h.settings.timeout) == (500, 2, 5.0)

    @pytest.mark.parametrize(
        ("conn", "overrides", "message"),
        [
            (
                {"password": ""},
                {},
                "Airflow connection 'codat_default' has no Codat API key: set its password to a key from the "
                "Codat Portal (Developers > API keys).",
            ),
            ({}, {"page_size": 0}, "Codat setting page_size=0 is out of range: use 1..5000."),
            ({}, {"page_size": 5001}, "Codat setting page_size=5001 is out of range: use 1..5000."),
            ({"extra": {"page_size": "lots"}}, {}, "Codat setting page_size='lots' is not a number."),
            (
                {},
                {"concurrency": 11},
                "Codat setting concurrency=11 is out of range: use 1..10 "
                "(Codat allows 10 concurrent requests per company).",
            ),
            (
                {"host": "http://codat-proxy.internal"},
                {},
                "Codat base URL 'http://codat-proxy.internal' uses plain http to a remote host, which would send "
                "the API key unencrypted. Use https, or set the connection extra allow_insecure_http=true for a "
                "trusted proxy.",
            ),
            (
                {"host": "ftp://x.example.com"},
                {},
                "Codat base URL 'ftp://x.example.com' is not an http(s) URL: leave the connection's host empty "
                "for https://api.codat.io, or give a full URL such as https://proxy.example.com.",
            ),
            (
                {"conn_type": "http"},
                {},
                "Airflow connection 'codat_default' has type 'http', not 'codat'. Create a connection of type "
                "'codat' with the API key as its password.",
            ),
        ],
    )
    def test_bad_settings_fail_before_any_request(self, monkeypatch, requests_mock, conn, overrides, message):
        set_conn(monkeypatch, **conn)
        with pytest.raises(CodatInputError) as err:
            list(CodatHook(**overrides).list_companies())
        assert str(err.value) == message
        assert requests_mock.call_count == 0

    def test_unknown_override(self):
        with pytest.raises(CodatInputError, match=r"^Unknown CodatHook setting\(s\): pagesize\. Known settings: "):
            CodatHook(pagesize=10)

    @pytest.mark.parametrize("host", ["http://localhost:9", "http://127.0.0.5:80", "http://[::1]:8080"])
    def test_plain_http_allowed_to_loopback(self, monkeypatch, host):
        set_conn(monkeypatch, host=host)
        assert CodatHook().settings.base_url == host

    def test_plain_http_to_remote_when_allowed(self, monkeypatch):
        set_conn(monkeypatch, host="http://proxy.corp:8080/codat/", extra={"allow_insecure_http": "true"})
        assert CodatHook().settings.base_url == "http://proxy.corp:8080/codat"

    def test_tls_verification_on_by_default(self):
        assert CodatHook().session.verify is True


class TestValidateId:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("", "The company id is empty: pass the Codat company id (a UUID such as 8a210b68-6988-11ed-a1eb-0242ac120002)."),
            (None, "The company id is empty: pass the Codat company id (a UUID such as 8a210b68-6988-11ed-a1eb-0242ac120002)."),
            (
                "../../admin",
                "The company id '../../admin' is not a Codat id: expected a UUID such as "
                "8a210b68-6988-11ed-a1eb-0242ac120002. Copy it from the Codat Portal or from CodatHook.list_companies().",
            ),
        ],
    )
    def test_rejects(self, value, message):
        with pytest.raises(CodatInputError) as err:
            validate_id(value, "company id")
        assert str(err.value) == message

    def test_accepts_and_strips(self):
        assert validate_id(f" {COMPANY} ", "company id") == COMPANY


class TestPaging:
    def test_every_page_in_order_concurrently(self, requests_mock):
        companies = [{"id": f"c{i:04d}"} for i in range(250)]
        requests_mock.get(f"{BASE}/companies", json=paged(companies, "/companies"))
        h = hook(page_size=10, concurrency=4)
        assert list(h.list_companies()) == companies
        assert sorted(page_numbers(requests_mock)) == list(range(1, 26))
        assert h.stats["pages"] == 25 and h.stats["requests"] == 25 and h.stats["retries"] == 0

    def test_a_server_capping_pages_but_echoing_the_size_asked_for_is_read_to_the_end(self, requests_mock):
        # Codat's spec allows pageSize 5000 in a request but 2000 in a response: a server that serves
        # 2000 and echoes 5000 must not make page 1 look like the last.
        companies = [{"id": f"c{i:04d}"} for i in range(4500)]

        def callback(request, context):
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            body = envelope(companies[(page - 1) * 2000 : page * 2000], page, 2000, 4500, "/companies")
            body["pageSize"] = 5000
            return body

        requests_mock.get(f"{BASE}/companies", json=callback)
        assert list(hook(page_size=5000).list_companies()) == companies
        assert sorted(page_numbers(requests_mock)) == [1, 2, 3]

    def test_page_one_short_of_total_results_without_a_next_link_fails(self, requests_mock):
        def callback(request, context):
            body = envelope([{"id": f"c{i}"} for i in range(3)], 1, 5000, 10, "/companies")
            body["_links"].pop("next", None)
            return body

        requests_mock.get(f"{BASE}/companies", json=callback)
        with pytest.raises(CodatPagingError) as err:
            list(hook(page_size=5000).list_companies())
        assert str(err.value).startswith("Codat reported 10 records for companies but served 3 distinct ones, twice.")

    def test_records_without_an_id_are_read_complete_across_pages(self, requests_mock):
        # Codat's own example of Xero bank transactions: no record has an id.
        path = f"/companies/{COMPANY}/connections/{CONN_A}/data/bankAccounts/35/bankTransactions"
        records = [{"accountId": "35", "amount": i, "description": "Same"} for i in range(93)]
        requests_mock.get(f"{BASE}{path}", json=paged(records, path))
        accounts = f"/companies/{COMPANY}/connections/{CONN_A}/data/bankAccounts"
        requests_mock.get(f"{BASE}{accounts}", json=paged([{"id": "35"}], accounts))
        h = hook(page_size=50, concurrency=2)
        assert list(h.iter_records(COMPANY, "bankTransactions", connection_id=CONN_A)) == records
        assert h.stats["requests"] == 3  # the bank accounts, then 2 pages: no re-read

    def test_records_without_an_id_fail_when_the_count_moves(self, requests_mock):
        records = [{"amount": i} for i in range(30)]

        def callback(request, context):
            qs = parse_qs(urlsplit(request.url).query)
            page, size = int(qs["page"][0]), int(qs["pageSize"][0])
            total = 30 if page == 1 else 29  # a record left the set after page 1 was read
            return envelope(records[(page - 1) * size : page * size], page, size, total, "/companies")

        requests_mock.get(f"{BASE}/companies", json=callback)
        with pytest.raises(CodatPagingError) as err:
            list(hook(page_size=10).list_companies())
        assert str(err.value) == (
            "Codat's results for companies changed while being read (totalResults 30 -> 29, 30 records read, 30 of "
            "them without an id). Records without an id cannot be told apart, so the read cannot be repaired by "
            "re-reading without writing some twice: retry the task later."
        )

    def test_stops_when_page_count_reached_even_if_next_link_lies(self, requests_mock):
        def callback(request, context):
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            body = envelope([{"id": f"r{page}"}], page, 1, 3)
            body["_links"]["next"] = {"href": "/again"}  # a server that always says "next"
            return body

        requests_mock.get(f"{BASE}/companies", json=callback)
        assert [c["id"] for c in hook(page_size=1).list_companies()] == ["r1", "r2", "r3"]
        assert sorted(page_numbers(requests_mock)) == [1, 2, 3]

    def test_single_page_when_no_next_link(self, requests_mock):
        requests_mock.get(f"{BASE}/companies", json=envelope([{"id": "a"}], 1, 100, 1))
        assert list(hook().list_companies()) == [{"id": "a"}]
        assert requests_mock.call_count == 1

    def test_empty_page_stops_paging_and_a_short_count_fails_loudly(self, requests_mock):
        def callback(request, context):
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            records = [{"id": f"r{page}"}] if page <= 2 else []
            return envelope(records, page, 1, 10)

        requests_mock.get(f"{BASE}/companies", json=callback)
        with pytest.raises(CodatPagingError) as err:
            list(hook(page_size=1, concurrency=1).list_companies())
        assert str(err.value) == (
            "Codat reported 10 records for companies but served 2 distinct ones, twice. Refusing to write an "
            "incomplete dataset; retry later or report it to Codat."
        )
        # Page 3 came back empty, so pages 4..10 were never asked for, in either pass.
        assert page_numbers(requests_mock) == [1, 2, 3, 1, 2, 3]

    def test_page_size_clamped_by_server_is_honoured(self, requests_mock):
        records = [{"id": f"r{i:03d}"} for i in range(25)]

        def callback(request, context):
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            return envelope(records[(page - 1) * 10 : page * 10], page, 10, 25)  # asked 5000, got 10

        requests_mock.get(f"{BASE}/companies", json=callback)
        assert list(hook(page_size=5000).list_companies()) == records
        assert sorted(page_numbers(requests_mock)) == [1, 2, 3]

    def test_without_total_results_follows_next_and_refuses_a_repeated_page(self, requests_mock):
        def callback(request, context):
            body = envelope([{"id": "same"}], 1, 1, 5)
            del body["totalResults"]
            body["_links"]["next"] = {"href": "/companies?page=2"}
            return body

        requests_mock.get(f"{BASE}/companies", json=callback)
        with pytest.raises(CodatPagingError) as err:
            list(hook(page_size=1).list_companies())
        assert str(err.value) == (
            "Codat returned the same records for pages 1 and 2 of companies: refusing to loop on a repeated page."
        )
        assert requests_mock.call_count == 2

    def test_page_shift_is_detected_and_recovered(self, requests_mock):
        """A record leaves the window after page 1 is read: record r3 slides into page 1, unseen."""
        records = [{"id": f"r{i}"} for i in range(1, 7)]
        served = {"count": 0}

        def callback(request, context):
            served["count"] += 1
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            current = records if served["count"] == 1 else [r for r in records if r["id"] != "r1"]
            return envelope(current[(page - 1) * 2 : page * 2], page, 2, len(current))

        requests_mock.get(f"{BASE}/companies", json=callback)
        h = hook(page_size=2, concurrency=1)
        got = [c["id"] for c in h.list_companies()]
        assert sorted(got) == ["r1", "r2", "r3", "r4", "r5", "r6"]
        assert len(got) == len(set(got))

    def test_duplicate_from_a_forward_shift_is_dropped(self, requests_mock):
        """A record enters before page 2 is read: r2 is pushed from page 1 onto page 2."""
        before = [{"id": "r1"}, {"id": "r2"}, {"id": "r3"}, {"id": "r4"}]
        after = [{"id": "r0"}, *before]
        served = {"count": 0}

        def callback(request, context):
            served["count"] += 1
            page = int(parse_qs(urlsplit(request.url).query)["page"][0])
            current = before if served["count"] == 1 else after
            return envelope(current[(page - 1) * 2 : page * 2], page, 2, len(current))

        requests_mock.get(f"{BASE}/companies", json=callback)
        got = [c["id"] for c in hook(page_size=2, concurrency=1).list_companies()]
        assert len(got) == len(set(got))
        assert set(got) >= {"r1", "r2", "r3", "r4"}


class TestRecords:
    def test_company_scoped_query_and_order(self, requests_mock):
        path = f"/companies/{COMPANY}/data/invoices"
        requests_mock.get(f"{BASE}{path}", json=paged([{"id": "i1"}, {"id": "i2"}], path))
        got = list(hook().iter_records(COMPANY, "invoices", query="currency=GBP", order_by="-modifiedDate"))
        assert got == [{"id": "i1"}, {"id": "i2"}]
        qs = parse_qs(urlsplit(requests_mock.request_history[0].url).query)
        assert qs["query"] == ["currency=GBP"] and qs["orderBy"] == ["-modifiedDate"]
        assert "query=currency%3DGBP" in requests_mock.request_history[0].url

    def test_connection_scoped_reads_every_accounting_connection(self, requests_mock):
        connections = [
            {"id": CONN_A, "sourceType": "Accounting", "status": "Linked"},
            {"id": CONN_BANK, "sourceType": "Banking", "status": "Linked"},
            {"id": CONN_B, "sourceType": "Accounting", "status": "Deauthorized"},
            {"id": "44444444-4444-4444-8444-444444444444", "sourceType": "Accounting", "status": "PendingAuth"},
        ]
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(f"{BASE}{cpath}", json=paged(connections, cpath))
        for conn, ids in ((CONN_A, ["a1", "a2"]), (CONN_B, ["b1"])):
            path = f"{cpath}/{conn}/data/directCosts"
            requests_mock.get(f"{BASE}{path}", json=paged([{"id": i} for i in ids], path))
        pages = list(hook().iter_pages(COMPANY, "directCosts"))
        assert [(p.connection_id, [r["id"] for r in p.records]) for p in pages] == [
            (CONN_A, ["a1", "a2"]),
            (CONN_B, ["b1"]),
        ]

    def test_a_connection_lacking_the_data_type_is_skipped_only_among_others(self, requests_mock):
        cpath = f"/companies/{COMPANY}/connections"
        connections = [
            {"id": CONN_A, "sourceType": "Accounting", "status": "Unlinked"},
            {"id": CONN_B, "sourceType": "Accounting", "status": "Linked"},
        ]
        requests_mock.get(f"{BASE}{cpath}", json=paged(connections, cpath))
        requests_mock.get(
            f"{BASE}{cpath}/{CONN_A}/data/directCosts",
            status_code=404,
            json=error_body(404, "Datatype directCosts not supported by platform(s) Sage 50"),
        )
        path = f"{cpath}/{CONN_B}/data/directCosts"
        requests_mock.get(f"{BASE}{path}", json=paged([{"id": "d1"}], path))
        pages = list(hook().iter_pages(COMPANY, "directCosts"))
        assert [(p.connection_id, p.unavailable, p.records) for p in pages] == [
            (CONN_A, "not_supported", []),
            (CONN_B, None, [{"id": "d1"}]),
        ]
        # Asked for by id, the connection's answer is the answer.
        with pytest.raises(CodatDataTypeNotSupportedError):
            list(hook().iter_pages(COMPANY, "directCosts", connection_id=CONN_A))

    def test_bank_transactions_walk_bank_accounts(self, requests_mock):
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(
            f"{BASE}{cpath}", json=paged([{"id": CONN_A, "sourceType": "Accounting", "status": "Linked"}], cpath)
        )
        accounts = ["55555555-5555-4555-8555-555555555555", "66666666-6666-4666-8666-666666666666"]
        apath = f"{cpath}/{CONN_A}/data/bankAccounts"
        requests_mock.get(f"{BASE}{apath}", json=paged([{"id": a} for a in accounts], apath))
        for n, account in enumerate(accounts):
            tpath = f"{apath}/{account}/bankTransactions"
            requests_mock.get(f"{BASE}{tpath}", json=paged([{"id": f"t{n}"}], tpath))
        pages = list(hook().iter_pages(COMPANY, "bankTransactions", query="amount>0"))
        assert [(p.connection_id, p.bank_account_id, p.records) for p in pages] == [
            (CONN_A, accounts[0], [{"id": "t0"}]),
            (CONN_A, accounts[1], [{"id": "t1"}]),
        ]

    def test_bank_accounts_with_platform_ids_are_walked_with_encoded_paths(self, requests_mock):
        # Bank account ids are the platform's (QuickBooks Online: "35"), not Codat UUIDs.
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(
            f"{BASE}{cpath}", json=paged([{"id": CONN_A, "sourceType": "Accounting", "status": "Linked"}], cpath)
        )
        apath = f"{cpath}/{CONN_A}/data/bankAccounts"
        requests_mock.get(f"{BASE}{apath}", json=paged([{"id": "35"}, {"id": "Savings/2 ?"}], apath))
        for segment, record in (("35", "t35"), ("Savings%2F2%20%3F", "tsav")):
            tpath = f"{apath}/{segment}/bankTransactions"
            requests_mock.get(f"{BASE}{tpath}", json=paged([{"id": record}], tpath))
        pages = list(hook().iter_pages(COMPANY, "bankTransactions"))
        assert [(p.bank_account_id, p.records) for p in pages] == [("35", [{"id": "t35"}]), ("Savings/2 ?", [{"id": "tsav"}])]
        assert [urlsplit(r.url).path for r in requests_mock.request_history[2:]] == [
            f"{apath}/35/bankTransactions",
            f"{apath}/Savings%2F2%20%3F/bankTransactions",
        ]

    def test_an_empty_bank_account_id_from_codat_is_an_error(self, requests_mock):
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(
            f"{BASE}{cpath}", json=paged([{"id": CONN_A, "sourceType": "Accounting", "status": "Linked"}], cpath)
        )
        apath = f"{cpath}/{CONN_A}/data/bankAccounts"
        requests_mock.get(f"{BASE}{apath}", json=paged([{"id": " "}], apath))
        with pytest.raises(CodatAPIError) as err:
            list(hook().iter_pages(COMPANY, "bankTransactions"))
        assert str(err.value) == "Codat returned a bank account id that is empty (' '): cannot read the records below it."

    def test_banking_types_read_banking_connections(self, requests_mock):
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(
            f"{BASE}{cpath}",
            json=paged(
                [
                    {"id": CONN_A, "sourceType": "Accounting", "status": "Linked"},
                    {"id": CONN_BANK, "sourceType": "Banking", "status": "Linked"},
                ],
                cpath,
            ),
        )
        path = f"{cpath}/{CONN_BANK}/data/banking-accounts"
        requests_mock.get(f"{BASE}{path}", json=paged([{"id": "ba1"}], path))
        assert list(hook().iter_records(COMPANY, "banking-accounts")) == [{"id": "ba1"}]

    def test_no_matching_connection_is_data_unavailable(self, requests_mock):
        cpath = f"/companies/{COMPANY}/connections"
        requests_mock.get(f"{BASE}{cpath}", json=paged([{"id": CONN_A, "sourceType": "Accounting", "status": "PendingAuth"}], cpath))
        with pytest.raises(CodatNoConnectionError) as err:
            list(hook().iter_records(COMPANY, "transfers"))
        assert str(err.value) == (
            f"Company {COMPANY} has no linked Accounting connection, so transfers cannot be read. "
            "Link a Accounting connection in Codat, or skip transfers for this company."
        )
        assert err.value.reason == "no_connection"

    def test_explicit_connection(self, requests_mock):
        path = f"/companies/{COMPANY}/connections/{CONN_B}/data/transfers"
        requests_mock.get(f"{BASE}{path}", json=paged([{"id": "t"}], path))
        assert list(hook().iter_records(COMPANY, "transfers", connection_id=CONN_B)) == [{"id": "t"}]
        assert requests_mock.call_count == 1

    def test_snapshot(self, requests_mock):
        requests_mock.get(f"{BASE}/companies/{COMPANY}/data/financials/balanceSheet", json={"reports": []})
        assert list(hook().iter_records(COMPANY, "balanceSheet")) == [{"reports": []}]
        # Codat requires periodLength and periodsToCompare for every report: a year of months by default.
        assert parse_qs(urlsplit(requests_mock.last_request.url).query) == {
            "periodLength": ["1"], "periodsToCompare": ["12"],
        }  # fmt: skip
        h = hook()
        h.get_snapshot(COMPANY, "balanceSheet", {"periodLength": 3, "startMonth": "2024-01-01"})
        assert parse_qs(urlsplit(requests_mock.last_request.url).query) == {
            "periodLength": ["3"], "periodsToCompare": ["12"], "startMonth": ["2024-01-01"],
        }  # fmt: skip
        requests_mock.get(f"{BASE}/companies/{COMPANY}/data/info", json={"companyName": "Acme"})
        assert h.get_snapshot(COMPANY, "info") == {"companyName": "Acme"}
        assert urlsplit(requests_mock.last_request.url).query == ""

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"data_type": "invoice"}, UnknownDataTypeError, "Unknown Codat data type 'invoice'. Did you mean 'invoices'?"),
            (
                {"data_type": "invoices", "connection_id": CONN_A},
                CodatInputError,
                "'invoices' is company-scoped: drop connection_id, or pick a connection-scoped data type.",
            ),
            (
                {"data_type": "info", "query": "name=x"},
                CodatInputError,
                "'info' is a snapshot: it cannot be filtered with a query.",
            ),
        ],
    )
    def test_bad_input_before_any_request(self, requests_mock, kwargs, error, message):
        with pytest.raises(error) as err:
            list(hook().iter_records(COMPANY, **kwargs))
        assert str(err.value).startswith(message)
        assert requests_mock.call_count == 0


class TestErrorsAndRetries:
    URL = f"{BASE}/companies/{COMPANY}/data/invoices"

    def read(self, **overrides):
        return list(hook(**overrides).iter_records(COMPANY, "invoices", query="currency=GBP"))

    def ok(self):
        return {"json": envelope([{"id": "i1"}], 1, 2000, 1), "status_code": 200}

    def test_5xx_then_success(self, requests_mock):
        requests_mock.get(self.URL, [{"status_code": 503, "json": error_body(503, "busy")}, {"status_code": 500}, self.ok()])
        h = hook()
        assert list(h.iter_records(COMPANY, "invoices")) == [{"id": "i1"}]
        assert requests_mock.call_count == 3 and h.stats["retries"] == 2

    def test_5xx_until_retries_run_out(self, requests_mock):
        requests_mock.get(self.URL, status_code=502, json=error_body(502, "bad gateway"))
        with pytest.raises(CodatServerError) as err:
            self.read(max_retries=2)
        assert str(err.value) == (
            f"Codat answered 502 to GET /companies/{COMPANY}/data/invoices: bad gateway (correlationId corr-123)"
        )
        assert requests_mock.call_count == 3

    def test_truncated_body_is_retried(self, requests_mock):
        requests_mock.get(self.URL, [{"status_code": 200, "text": '{"results": [{"id": "i'}, self.ok()])
        assert self.read() == [{"id": "i1"}]

    def test_connection_error_retried_then_clear(self, requests_mock):
        import requests

        requests_mock.get(self.URL, exc=requests.exceptions.ConnectionError("boom [Errno 111] Connection refused"))
        with pytest.raises(CodatConnectionError) as err:
            self.read(max_retries=1)
        assert str(err.value) == (
            f"Could not reach Codat at {BASE} (GET /companies/{COMPANY}/data/invoices): "
            "ConnectionError: Connection refused."
        )
        assert requests_mock.call_count == 2

    def test_timeout_retried(self, requests_mock):
        import requests

        requests_mock.get(self.URL, [{"exc": requests.exceptions.ReadTimeout("slow")}, self.ok()])
        assert self.read(timeout=3) == [{"id": "i1"}]

    @pytest.mark.parametrize("retry_after", ["0", "HTTP_DATE"])
    def test_429_honours_retry_after(self, requests_mock, retry_after, monkeypatch):
        if retry_after == "HTTP_DATE":
            retry_after = format_datetime(datetime.now(UTC) - timedelta(seconds=1), usegmt=True)
        requests_mock.get(
            self.URL, [{"status_code": 429, "headers": {"Retry-After": retry_after}, "json": error_body(429, "slow down")}, self.ok()]
        )
        h = hook()
        assert list(h.iter_records(COMPANY, "invoices")) == [{"id": "i1"}]
        assert h.stats["rate_limited"] == 1 and h.stats["retries"] == 1

    def test_wait_uses_retry_after(self):
        import tenacity

        h = hook()
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
        state.set_exception((CodatRateLimitError, CodatRateLimitError("x", retry_after=7.5), None))
        assert h._wait(state) == 7.5

    def test_429_past_the_cap_fails_fast_with_reset_time(self, requests_mock):
        reset = datetime(2030, 1, 2, 0, 0, tzinfo=UTC)
        requests_mock.get(
            self.URL,
            status_code=429,
            headers={"Retry-After": format_datetime(reset, usegmt=True)},
            json=error_body(429, "Daily quota exceeded"),
        )
        with pytest.raises(CodatRateLimitError) as err:
            self.read()
        text = str(err.value)
        assert re.fullmatch(
            rf"Codat's rate limit blocks GET /companies/{COMPANY}/data/invoices for \d+s, longer than the 120s "
            r"this connection waits \(max_retry_wait\): the daily quota is probably spent\. It resets at "
            r"2030-01-02 00:00:00 UTC; rerun after that\. Daily quota exceeded \(correlationId corr-123\)",
            text,
        ), text
        assert requests_mock.call_count == 1
        assert err.value.retry_at == reset

    def test_400_not_retried_and_names_the_query(self, requests_mock):
        requests_mock.get(self.URL, status_code=400, json=error_body(400, "Invalid query: unknown field 'currenc'"))
        with pytest.raises(CodatBadRequestError) as err:
            self.read()
        assert str(err.value) == (
            f"Codat rejected GET /companies/{COMPANY}/data/invoices as a bad request: Invalid query: unknown "
            "field 'currenc'. The query sent was: currency=GBP (correlationId corr-123)"
        )
        assert err.value.query == "currency=GBP"
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("status", [401, 403])
    def test_auth_not_retried(self, requests_mock, status):
        requests_mock.get(self.URL, status_code=status, json=error_body(status, "Unauthorized"))
        with pytest.raises(CodatAuthError) as err:
            self.read()
        assert str(err.value).startswith(f"Codat refused the API key ({status}) for GET /companies/")
        assert "Check the password of Airflow connection 'codat_default'" in str(err.value)
        assert requests_mock.call_count == 1

    def test_unknown_company(self, requests_mock):
        requests_mock.get(self.URL, status_code=404, json=error_body(404, f"No company was found with ID {COMPANY}"))
        with pytest.raises(CodatNotFoundError) as err:
            self.read()
        assert not isinstance(err.value, CodatDataTypeNotSupportedError)
        assert requests_mock.call_count == 1

    def test_unsupported_data_type(self, requests_mock):
        requests_mock.get(
            self.URL, status_code=404, json=error_body(404, "Datatype invoices not supported by platform(s) Xero")
        )
        with pytest.raises(CodatDataTypeNotSupportedError) as err:
            self.read()
        assert err.value.reason == "not_supported"

    def test_no_data_available_is_unavailable_not_missing(self, requests_mock):
        # Codat's shared Not-Found example: "No data available for accounts for ID …".
        message = f"No data available for invoices for ID {COMPANY}"
        requests_mock.get(self.URL, status_code=404, json=error_body(404, message))
        with pytest.raises(CodatNoDataError) as err:
            self.read()
        assert err.value.reason == "no_data" and isinstance(err.value, CodatDataUnavailableError)
        assert str(err.value) == (
            f"Codat has no data of this type for the company (GET /companies/{COMPANY}/data/invoices): {message} "
            "(correlationId corr-123)"
        )
        assert requests_mock.call_count == 1

    def test_not_synced(self, requests_mock):
        requests_mock.get(self.URL, status_code=409, json=error_body(409, "The data set has not been requested."))
        with pytest.raises(CodatDataNotSyncedError) as err:
            self.read()
        assert err.value.reason == "not_synced"
        assert str(err.value) == (
            f"Codat has not synced this data set yet (GET /companies/{COMPANY}/data/invoices): The data set has "
            "not been requested. (correlationId corr-123). Queue a refresh or wait until dataStatus says Complete."
        )

    def test_key_never_in_errors_or_logs(self, requests_mock, caplog):
        caplog.set_level(logging.DEBUG)
        requests_mock.get(self.URL, status_code=401, json=error_body(401, "Unauthorized"))
        with pytest.raises(CodatAuthError) as err:
            self.read()
        b64 = base64.b64encode(API_KEY.encode()).decode()
        for text in (str(err.value), repr(err.value), caplog.text, repr(hook().session.auth)):
            assert API_KEY not in text and b64 not in text

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("12", 12.0), ("0", 0.0), ("-3", 0.0), ("soon", None), (None, None)],
    )
    def test_parse_retry_after(self, value, seconds):
        assert _parse_retry_after(value)[0] == seconds


class TestEndpoints:
    def test_data_status_and_queue(self, requests_mock):
        requests_mock.get(f"{BASE}/companies/{COMPANY}/dataStatus", json={"invoices": {"dataType": "invoices"}})
        requests_mock.post(f"{BASE}/companies/{COMPANY}/data/queue/chartOfAccounts", json={"id": "pull"})
        h = hook()
        assert h.get_data_status(COMPANY) == {"invoices": {"dataType": "invoices"}}
        assert h.queue_refresh(COMPANY, "accounts") == {"id": "pull"}

    def test_test_connection(self, requests_mock):
        requests_mock.get(f"{BASE}/companies", json=envelope([{"id": "c"}], 1, 1, 42))
        assert hook().test_connection() == (True, f"Connected to Codat at {BASE}; the key sees 42 companies.")

    def test_test_connection_bad_key(self, requests_mock):
        requests_mock.get(f"{BASE}/companies", status_code=401, json=error_body(401, "Unauthorized"))
        ok, message = hook().test_connection()
        assert not ok and message.startswith("Codat rejected the API key: Codat refused the API key (401)")
        assert requests_mock.call_count == 1

    def test_test_connection_unreachable(self, requests_mock):
        import requests

        requests_mock.get(f"{BASE}/companies", exc=requests.exceptions.ConnectionError("[Errno -2] Name or service not known"))
        assert hook().test_connection() == (
            False,
            f"Could not reach Codat: Could not reach Codat at {BASE} (GET /companies): ConnectionError: Name or service not known.",
        )
        assert requests_mock.call_count == 1
