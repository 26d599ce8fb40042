"""The catalog of Codat data types: every type this provider reads, described once.

The hook, the operator, the fake Codat API and the example DAGs all read this module; nothing
else lists data types. Names are Codat's URL segment names (``invoices``, ``bankAccounts``,
``banking-accounts``); ``key`` is the ``dataType`` key Codat uses in ``dataStatus`` and when
queueing a refresh (``accounts`` is ``chartOfAccounts``).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from airflow_provider_codat.data_type_fields import FIELDS


class Scope(enum.StrEnum):
    """Where a data type lives in Codat's URL space."""

    #: ``/companies/{companyId}/data/<segment>``
    COMPANY = "company"
    #: ``/companies/{companyId}/connections/{connectionId}/data/<segment>``
    CONNECTION = "connection"
    #: ``/companies/{companyId}/connections/{connectionId}/data/bankAccounts/{accountId}/<segment>``
    BANK_ACCOUNT = "bank_account"


@dataclass(frozen=True)
class DataType:
    """
    One Codat data type.

    :param name: the URL segment name, which is also the name users pass (``invoices``).
    :param key: Codat's ``dataType`` key, used by ``dataStatus`` and the refresh queue.
    :param scope: company-, connection- or bank-account-scoped.
    :param path: the URL path below ``/companies/{company_id}/`` (or below the connection or bank
        account for narrower scopes).
    :param source_type: the ``sourceType`` of the connections the data comes from (``Accounting`` or
        ``Banking``): company-scoped types too are served from the company's Accounting connection.
        Connection-scoped types read every such connection when no connection is given.
    :param incremental: whether the type is paged and filterable on ``cursor_field``. Snapshot types
        (company info, financial reports) are not: each read returns the whole current state.
    :param cursor_field: the field incremental windows filter on.
    :param primary_key: fields that identify a record within a company (and connection, for
        connection-scoped types); empty when nothing does (account balances).
    :param order_by: the field reads are ordered on (Codat's ``orderBy``), so that page-number paging
        does not rest on Codat's unstated default order.
    :param has_is_deleted: whether records carry ``metadata.isDeleted``.
    :param default_params: query parameters Codat requires for this endpoint, as (name, value) pairs
        sent when the caller gives none (the financial reports' ``periodLength`` and ``periodsToCompare``).
    """

    name: str
    key: str
    scope: Scope
    path: str
    source_type: str = "Accounting"
    incremental: bool = True
    cursor_field: str | None = "modifiedDate"
    primary_key: tuple[str, ...] = ("id",)
    order_by: str | None = "id"
    has_is_deleted: bool = True
    default_params: tuple[tuple[str, str], ...] = ()

    @property
    def fields(self) -> tuple[str, ...] | None:
        """
        The top-level record fields in Codat's OpenAPI specs, sorted; ``None`` where the specs have no
        record schema (``itemReceipts``). CSV and Parquet files use them as their columns.
        """
        return FIELDS.get(self.name)

    @property
    def connection_scoped(self) -> bool:
        """Whether records are read per connection (this includes bank-account scope)."""
        return self.scope is not Scope.COMPANY


def _company(name: str, key: str | None = None) -> DataType:
    return DataType(name=name, key=key or name, scope=Scope.COMPANY, path=f"data/{name}")


def _connection(name: str, *, source_type: str = "Accounting", has_is_deleted: bool = True) -> DataType:
    return DataType(
        name=name,
        key=name,
        scope=Scope.CONNECTION,
        path=f"data/{name}",
        source_type=source_type,
        has_is_deleted=has_is_deleted,
    )


#: Codat requires both for every financial report: a year of monthly periods unless told otherwise.
_REPORT_PARAMS = (("periodLength", "1"), ("periodsToCompare", "12"))


def _snapshot(name: str, key: str, path: str, default_params: tuple[tuple[str, str], ...] = ()) -> DataType:
    return DataType(
        name=name,
        key=key,
        scope=Scope.COMPANY,
        path=path,
        incremental=False,
        cursor_field=None,
        primary_key=(),
        order_by=None,
        has_is_deleted=False,
        default_params=default_params,
    )


_ALL: tuple[DataType, ...] = (
    # Company-scoped accounting types.
    _company("accounts", key="chartOfAccounts"),
    _company("customers"),
    _company("suppliers"),
    _company("invoices"),
    _company("creditNotes"),
    _company("payments"),
    _company("bills"),
    _company("billPayments"),
    _company("billCreditNotes"),
    _company("journalEntries"),
    _company("journals"),
    _company("taxRates"),
    _company("trackingCategories"),
    _company("paymentMethods"),
    _company("items"),
    _company("purchaseOrders"),
    _company("salesOrders"),
    # Connection-scoped accounting types.
    _connection("accountTransactions"),
    _connection("bankAccounts"),
    _connection("directCosts"),
    _connection("directIncomes"),
    _connection("transfers"),
    _connection("itemReceipts"),
    DataType(
        name="bankTransactions",
        key="bankTransactions",
        scope=Scope.BANK_ACCOUNT,
        path="bankTransactions",
        source_type="Accounting",
        has_is_deleted=False,
    ),
    # Open banking, connection-scoped; these records carry no ``metadata``.
    _connection("banking-accounts", source_type="Banking", has_is_deleted=False),
    _connection("banking-transactions", source_type="Banking", has_is_deleted=False),
    # Balances have no id, and nothing else identifies one: Codat's spec says a bank may give an
    # end-of-day balance or a running balance per transaction, so an account can have many per date.
    DataType(
        name="banking-accountBalances",
        key="banking-accountBalances",
        scope=Scope.CONNECTION,
        path="data/banking-accountBalances",
        source_type="Banking",
        primary_key=(),
        order_by="date",
        has_is_deleted=False,
    ),
    _connection("banking-transactionCategories", source_type="Banking", has_is_deleted=False),
    # Snapshots: not paged, no modifiedDate.
    _snapshot("info", key="company", path="data/info"),
    _snapshot("balanceSheet", key="balanceSheet", path="data/financials/balanceSheet", default_params=_REPORT_PARAMS),
    _snapshot(
        "profitAndLoss", key="profitAndLoss", path="data/financials/profitAndLoss", default_params=_REPORT_PARAMS
    ),
    _snapshot(
        "cashFlowStatement",
        key="cashFlowStatement",
        path="data/financials/cashFlowStatement",
        default_params=_REPORT_PARAMS,
    ),
)

#: Every Codat data type this provider reads, by name (the URL segment name).
DATA_TYPES: Mapping[str, DataType] = MappingProxyType({dt.name: dt for dt in _ALL})

#: The data types whose records can be read incrementally over a window.
INCREMENTAL_DATA_TYPES: tuple[str, ...] = tuple(dt.name for dt in _ALL if dt.incremental)

_BY_KEY: Mapping[str, DataType] = MappingProxyType({dt.key: dt for dt in _ALL})


def get_data_type(name: str) -> DataType:
    """
    Look up a data type by its name, or by its Codat ``dataType`` key (``chartOfAccounts``).

    :param name: the name to look up.
    :return: the catalog entry.
    :raises UnknownDataTypeError: if the name is not in the catalog; the message suggests the
        nearest names.
    """
    if isinstance(name, DataType):
        return name
    found = DATA_TYPES.get(name) or _BY_KEY.get(name)
    if found is not None:
        return found
    from airflow_provider_codat.exceptions import UnknownDataTypeError

    candidates = list(DATA_TYPES) + [k for k in _BY_KEY if k not in DATA_TYPES]
    by_case = {c.lower(): c for c in candidates}
    nearest = difflib.get_close_matches(str(name), candidates, n=3, cutoff=0.6)
    if str(name).lower() in by_case and by_case[str(name).lower()] not in nearest:
        nearest.insert(0, by_case[str(name).lower()])
    hint = f" Did you mean {', '.join(repr(n) for n in nearest)}?" if nearest else ""
    raise UnknownDataTypeError(
        f"Unknown Codat data type {name!r}.{hint} "
        f"Known data types: {', '.join(DATA_TYPES)} "
        "(see airflow_provider_codat.data_types.DATA_TYPES)."
    )
