"""The example scheduled DAG's planning rule, on hand-made connections: which data types each company can give."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "example_codat_to_s3.py"
ACCOUNTING_AND_BANKING = ["invoices", "accounts", "bankAccounts", "banking-accounts", "banking-transactions"]


@pytest.fixture(scope="module")
def example():
    """The DAG file as a module, loaded the way the dag processor reads it (by path)."""
    spec = importlib.util.spec_from_file_location("example_codat_to_s3_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conn(source_type, status):
    return {"id": f"{source_type}-{status}", "sourceType": source_type, "status": status, "platformName": "X"}


@pytest.mark.parametrize(
    ("connections", "expected"),
    [
        pytest.param(
            [conn("Banking", "Linked")], ["banking-accounts", "banking-transactions"], id="banking-only company"
        ),
        pytest.param(
            [conn("Accounting", "Unlinked")], ["invoices", "accounts", "bankAccounts"], id="unlinked accounting"
        ),
        pytest.param(
            [conn("Accounting", "Deauthorized"), conn("Banking", "Unlinked")],
            ACCOUNTING_AND_BANKING,
            id="deauthorized accounting, unlinked banking",
        ),
        pytest.param(
            [conn("Accounting", "Linked"), conn("Accounting", "Linked")],
            ["invoices", "accounts", "bankAccounts"],
            id="two accounting connections",
        ),
        pytest.param(
            [conn("Accounting", "PendingAuth"), conn("Banking", "Linked")],
            ["banking-accounts", "banking-transactions"],
            id="pending accounting, linked banking",
        ),
        pytest.param([conn("Accounting", "PendingAuth")], [], id="never linked"),
        pytest.param([conn("Commerce", "Linked")], [], id="commerce only"),
        pytest.param([], [], id="no connections"),
    ],
)
def test_data_types_to_read(example, connections, expected):
    assert example.data_types_to_read(connections, ACCOUNTING_AND_BANKING) == expected


def test_company_scoped_types_need_an_accounting_connection(example):
    # Codat serves company-scoped types from the company's Accounting connection.
    assert example.data_types_to_read([conn("Accounting", "Linked")], ["invoices", "accounts"]) == ["invoices", "accounts"]
    assert example.data_types_to_read([conn("Banking", "Linked")], ["invoices", "customers"]) == []


def test_a_connection_without_status_or_source_type_gives_nothing(example):
    assert example.data_types_to_read([{"id": "c"}, {"sourceType": "Accounting"}], ["invoices"]) == []
