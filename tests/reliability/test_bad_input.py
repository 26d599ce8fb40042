"""Bad input, end to end: each mistake fails the task with a message that says what to fix, before any network call.

One table, one real DAG run per row. Every row checks that the task failed, that the exception
text holds the fragments that name the problem and its fix, and that nothing went on the network
at all: no connection was opened (the suite's network guard records every one), the fake Codat
API saw no request and the bucket is untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import read_objects, task_states
from tests.reliability.helpers import END, START

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reliability")]

WINDOW = {"window_start": START.isoformat(), "window_end": END.isoformat()}


@dataclass
class Case:
    """One mistake: operator arguments and/or connection fields, and the fragments the error must hold."""

    id: str
    expect: list[str]
    operator: dict[str, Any] = field(default_factory=dict)
    connection: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("unknown data type", ["Unknown Codat data type 'invoice'.", "Did you mean 'invoices'"], {"data_type": "invoice"}),
    Case("data type in the wrong case", ["Unknown Codat data type 'BankTransactions'", "Did you mean 'bankTransactions'"],
         {"data_type": "BankTransactions"}),
    Case("retired data type", ["Unknown Codat data type 'bankStatements'", "Did you mean", "Known data types:"],
         {"data_type": "bankStatements"}),
    Case("empty company id", ["The company id is empty", "pass the Codat company id (a UUID"], {"company_id": ""}),
    Case("blank company id", ["The company id is empty"], {"company_id": "   "}),
    Case("malformed company id", ["The company id 'acme-ltd' is not a Codat id: expected a UUID",
                                  "Copy it from the Codat Portal"], {"company_id": "acme-ltd"}),
    Case("window end before start", ["window_end 2024-02-01T00:00:00Z is not after window_start 2024-02-15T00:00:00Z"],
         {"window_start": END.isoformat(), "window_end": START.isoformat()}),
    Case("zero-width window", ["is not after window_start", "zero-width window", "CronDataIntervalTimetable"],
         {"window_start": START.isoformat(), "window_end": START.isoformat()}),
    Case("window end in the future", ["is in the future", "End windows at or before now"],
         {"window_start": START.isoformat(), "window_end": "2999-01-01T00:00:00Z"}),
    Case("unparseable window start", ["window_start='last tuesday' is not a date or datetime", "ISO 8601"],
         {"window_start": "last tuesday"}),
    Case("malformed query: dangling &&", ["Invalid Codat query 'currency=GBP&&'", "expected a field name or '{' after '&&'"],
         {"query": "currency=GBP&&"}),
    Case("malformed query: unclosed brace", ["Invalid Codat query", "'}' (to close the '{' opened at position 0)"],
         {"query": "{currency=GBP||currency=EUR"}),
    Case("malformed query: no operator", ["Invalid Codat query 'currency'", "expected an operator"], {"query": "currency"}),
    Case("query too long", ["characters long; Codat accepts at most 2047", "Use a narrower filter"],
         {"query": "reference=" + "A" * 2100}),
    Case("operator character in a value", ["Invalid Codat query 'contactRef.companyName=Smith&Sons'",
                                           "Values cannot contain any of = ! ~ < > & | { }", "no escaping"],
         {"query": "contactRef.companyName=Smith&Sons"}),
    Case("query on a snapshot type", ["'balanceSheet' is a snapshot: it cannot be filtered with a query"],
         {"data_type": "balanceSheet", "window_start": None, "window_end": None, "query": "currency=GBP"}),
    Case("snapshot type asked for an incremental window", ["'balanceSheet' is a snapshot (not incremental)",
                                                           "Drop window_start/window_end"], {"data_type": "balanceSheet"}),
    Case("page size 0", ["Codat setting page_size=0 is out of range: use 1..5000."], {"hook_params": {"page_size": 0}}),
    Case("page size above Codat's maximum", ["Codat setting page_size=5001 is out of range: use 1..5000."],
         {"hook_params": {"page_size": 5001}}),
    Case("page size not a whole number", ["Codat setting page_size=12.5 is not a number."],
         {"hook_params": {"page_size": 12.5}}),
    Case("concurrency above Codat's per-company limit", ["concurrency=11 is out of range: use 1..10",
                                                         "Codat allows 10 concurrent requests per company"],
         {"hook_params": {"concurrency": 11}}),
    Case("misspelt hook setting", ["Unknown CodatHook setting(s): pagesize.", "Known settings: base_url, page_size"],
         {"hook_params": {"pagesize": 100}}),
    Case("missing API key", ["Airflow connection 'codat_default' has no Codat API key: set its password",
                             "Codat Portal (Developers > API keys)"], connection={"password": None}),
    Case("blank API key", ["has no Codat API key"], connection={"password": "   "}),
    Case("connection of the wrong type", ["Airflow connection 'codat_default' has type 'http', not 'codat'.",
                                          "Create a connection of type 'codat'"], connection={"conn_type": "http"}),
    Case("plain http to a remote host", ["'http://codat-proxy.example.com' uses plain http to a remote host",
                                         "Use https, or set the connection extra allow_insecure_http=true"],
         connection={"host": "http://codat-proxy.example.com"}),
    Case("base URL that is not a URL", ["is not an http(s) URL"], connection={"host": "ftp://api.codat.io"}),
]  # fmt: skip


@pytest.mark.fake_codat(companies=2, records={"invoices": 50})
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_before_any_network_call(
    e2e, make_dag, task_events, network_guard, monkeypatch, case: Case
):
    fake, s3, bucket = e2e["fake"], e2e["s3"], e2e["bucket"]
    connection = {"conn_type": "codat", "password": fake.api_key, "host": fake.url, **case.connection}
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({k: v for k, v in connection.items() if v is not None}))
    kwargs = {"company_id": fake.company_ids()[0], "data_type": "invoices", "s3_bucket": bucket, **WINDOW}
    kwargs.update(case.operator)
    dag = make_dag("rel_bad_input", **{k: v for k, v in kwargs.items() if v is not None})
    network_guard.connections.clear()

    dr = dag.test()

    opened = list(network_guard.connections)
    assert task_states(dr) == {"extract": "failed"}
    message = task_events.error_text()
    for fragment in case.expect:
        assert fragment in message, f"{case.id}: {fragment!r} not in the error:\n{message}"
    assert not opened, f"{case.id}: connections opened before the input was refused: {opened}"
    assert not network_guard.refused
    assert fake.stats()["requests"] == 0
    assert read_objects(s3, bucket) == {}
