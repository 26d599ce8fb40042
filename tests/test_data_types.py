"""The catalog of Codat data types."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from airflow_provider_codat.data_types import DATA_TYPES, INCREMENTAL_DATA_TYPES, Scope, get_data_type
from airflow_provider_codat.exceptions import UnknownDataTypeError

COMPANY_SCOPED = [
    "accounts", "customers", "suppliers", "invoices", "creditNotes", "payments", "bills", "billPayments",
    "billCreditNotes", "journalEntries", "journals", "taxRates", "trackingCategories", "paymentMethods",
    "items", "purchaseOrders", "salesOrders",
]  # fmt: skip


def test_every_type_on_the_facts_page():
    assert [n for n, d in DATA_TYPES.items() if d.scope is Scope.COMPANY and d.incremental] == COMPANY_SCOPED
    assert [n for n, d in DATA_TYPES.items() if d.scope is not Scope.COMPANY] == [
        "accountTransactions", "bankAccounts", "directCosts", "directIncomes", "transfers", "itemReceipts",
        "bankTransactions", "banking-accounts", "banking-transactions", "banking-accountBalances",
        "banking-transactionCategories",
    ]  # fmt: skip
    assert [n for n, d in DATA_TYPES.items() if not d.incremental] == [
        "info", "balanceSheet", "profitAndLoss", "cashFlowStatement",
    ]  # fmt: skip
    assert len(INCREMENTAL_DATA_TYPES) == 28


def test_entries_are_frozen_and_keys_differ_where_codat_says():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATA_TYPES["invoices"].key = "x"
    assert DATA_TYPES["accounts"].key == "chartOfAccounts"
    assert DATA_TYPES["info"].key == "company"
    assert DATA_TYPES["bankTransactions"].scope is Scope.BANK_ACCOUNT
    assert DATA_TYPES["banking-accounts"].source_type == "Banking"
    assert DATA_TYPES["directCosts"].source_type == "Accounting"
    assert DATA_TYPES["invoices"].source_type == "Accounting"  # company-scoped: the Accounting connection
    assert DATA_TYPES["invoices"].has_is_deleted and not DATA_TYPES["bankTransactions"].has_is_deleted
    assert DATA_TYPES["balanceSheet"].path == "data/financials/balanceSheet"
    assert all(d.cursor_field == "modifiedDate" for d in DATA_TYPES.values() if d.incremental)


def test_lookup_by_key():
    assert get_data_type("chartOfAccounts") is DATA_TYPES["accounts"]
    assert get_data_type(DATA_TYPES["bills"]) is DATA_TYPES["bills"]


@pytest.mark.parametrize(
    ("name", "hint"),
    [("invoice", "Did you mean 'invoices'?"), ("Invoices", "Did you mean 'invoices'?"), ("bankTransaction", "Did you mean 'bankTransactions'")],
)
def test_unknown_type_suggests_nearest(name, hint):
    with pytest.raises(UnknownDataTypeError) as err:
        get_data_type(name)
    assert str(err.value).startswith(f"Unknown Codat data type {name!r}. {hint}")


def test_unknown_type_without_a_near_name():
    with pytest.raises(UnknownDataTypeError) as err:
        get_data_type("zzz")
    assert str(err.value).startswith("Unknown Codat data type 'zzz'. Known data types: accounts, customers,")


def test_fields_come_from_codats_record_schemas():
    assert DATA_TYPES["paymentMethods"].fields == (
        "id", "metadata", "modifiedDate", "name", "sourceModifiedDate", "status", "type",
    )  # fmt: skip
    assert DATA_TYPES["itemReceipts"].fields is None  # no record schema in Codat's specs
    for data_type in DATA_TYPES.values():
        if data_type.fields is None:
            continue
        assert list(data_type.fields) == sorted(set(data_type.fields)), data_type.name
        assert set(data_type.primary_key) <= set(data_type.fields), data_type.name
        assert data_type.cursor_field is None or data_type.cursor_field in data_type.fields, data_type.name
    assert [name for name, d in DATA_TYPES.items() if d.fields is None] == ["itemReceipts"]


def test_generated_fields_module_matches_the_committed_schemas():
    """``data_type_fields.py`` is what ``scripts/generate_data_type_fields.py`` makes of tests/testing/codat_schemas."""
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("generate_fields", root / "scripts" / "generate_data_type_fields.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (root / "airflow_provider_codat" / "data_type_fields.py").read_text()
    assert generator.render(root / "tests" / "testing" / "codat_schemas") == committed
    assert generator.top_level_fields(
        {"allOf": [{"properties": {"a": {}}}, {"anyOf": [{"properties": {"b": {}}}, {"type": "null"}]}]}
    ) == {"a", "b"}


def test_primary_keys_are_one_field_or_none():
    # The hook's page-shift check deduplicates on one id field; a composite key would need it extended.
    assert {dt.primary_key for dt in DATA_TYPES.values()} == {("id",), ()}
    assert [name for name, dt in DATA_TYPES.items() if dt.incremental and not dt.primary_key] == ["banking-accountBalances"]
