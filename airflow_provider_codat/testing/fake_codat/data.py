"""The fake's data set: companies, their connections, and every record, derived from the seed.

Companies and connections are built up front (cheap); each record set (company x data type, or
connection x data type, or bank account for ``bankTransactions``) is generated on first use.

Connections by company index ``i`` (deterministic, so tests can pick companies by kind):

* ``i % 20 == 19``: a single ``PendingAuth`` Accounting connection, never synced: every data type
  answers 409 and ``dataStatus`` is empty;
* ``i % 20 == 18``: a single ``Unlinked`` Accounting connection whose earlier syncs stay readable;
* ``i % 10 == 4``: two ``Linked`` Accounting connections (on different platforms);
* every other company: one ``Linked`` Accounting connection;
* ``i % 3 == 0`` (and not 18 or 19 mod 20): also a ``Linked`` Banking connection.

So with 250 companies: 12 PendingAuth-only, 12 Unlinked-only, 25 with two Accounting connections,
76 with a Banking connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

from airflow_provider_codat.data_types import DATA_TYPES, DataType, Scope
from airflow_provider_codat.testing.fake_codat.config import FakeCodatConfig, parse_utc
from airflow_provider_codat.testing.fake_codat.generators import (
    CHART_OF_ACCOUNTS,
    ID_LESS,
    RecordContext,
    build_record,
    business_name,
    day,
    stable_hash,
    stable_uuid,
    utc_instant,
)
from airflow_provider_codat.testing.fake_codat.table import Table, encode

ACCOUNTING_PLATFORMS = (
    ("Xero", "gbeh"),
    ("QuickBooks Online", "qhyg"),
    ("Sage Business Cloud Accounting", "tgff"),
    ("FreeAgent", "fbrh"),
)
BANKING_PLATFORMS = (("Plaid", "ugxp"), ("TrueLayer", "akxx"))
_CURRENCIES = ("GBP", "GBP", "USD", "EUR", "GBP")
_DAY = 86_400
# Records of these types reference records of the parent type in the same connection.
_PARENT_TYPES = {
    "accountTransactions": "bankAccounts",
    "transfers": "bankAccounts",
    "banking-transactions": "banking-accounts",
    "banking-accountBalances": "banking-accounts",
}


@dataclass(frozen=True)
class Connection:
    """One data connection of a company, as ``GET /companies/{id}/connections`` lists it."""

    id: str
    source_type: str
    platform_name: str
    status: str
    document: dict[str, Any]

    @property
    def has_data(self) -> bool:
        """Whether it was ever synced: an unlinked connection keeps its earlier data."""
        return self.status in ("Linked", "Unlinked")


@dataclass
class Company:
    """One company and its connections."""

    index: int
    id: str
    name: str
    currency: str
    connections: list[Connection]
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        """Whether any connection was ever synced (if not, every data type is unsynced)."""
        return any(connection.has_data for connection in self.connections)

    def connection(self, connection_id: str) -> Connection | None:
        return next((c for c in self.connections if c.id == connection_id), None)


def _connections(seed: int, index: int, company_id: str, created: int, synced: int) -> list[Connection]:
    kinds: list[tuple[str, str]]
    if index % 20 == 19:
        kinds = [("Accounting", "PendingAuth")]
    elif index % 20 == 18:
        kinds = [("Accounting", "Unlinked")]
    else:
        kinds = [("Accounting", "Linked")] * (2 if index % 10 == 4 else 1)
        if index % 3 == 0:
            kinds.append(("Banking", "Linked"))
    connections = []
    for number, (source_type, status) in enumerate(kinds):
        platforms = ACCOUNTING_PLATFORMS if source_type == "Accounting" else BANKING_PLATFORMS
        platform, key = platforms[(index + number) % len(platforms)]
        connection_id = stable_uuid(seed, company_id, "connection", number)
        document = {
            "id": connection_id,
            "integrationId": stable_uuid("integration", key),
            "integrationKey": key,
            "sourceId": stable_uuid("source", key),
            "sourceType": source_type,
            "platformName": platform,
            "linkUrl": f"https://link-api.codat.io/companies/{company_id}/connections/{connection_id}/start",
            "status": status,
            "lastSync": utc_instant(synced) if status != "PendingAuth" else None,
            "created": utc_instant(created + number * _DAY),
            "dataConnectionErrors": [],
            "connectionInfo": None,
        }
        connections.append(Connection(connection_id, source_type, platform, status, document))
    return connections


class Dataset:
    """
    Everything the fake serves for one value of the data knobs.

    Not thread-safe: the owner serialises access.

    :param config: the knobs; only the data knobs are read.
    """

    def __init__(self, config: FakeCodatConfig) -> None:
        self.config = config
        self.modified_from = int(parse_utc(config.modified_from).timestamp())
        self.modified_to = int(parse_utc(config.modified_to).timestamp())
        #: Set by any change to generated data, so a reset knows it must rebuild.
        self.dirty = False
        self.companies: list[Company] = []
        for index in range(config.companies):
            company_id = stable_uuid(config.seed, "company", index)
            created = self.modified_from - (30 + stable_hash(config.seed, company_id) % 300) * _DAY
            name = business_name(config.seed, "company", index)
            company = Company(
                index=index,
                id=company_id,
                name=name,
                currency=_CURRENCIES[index % len(_CURRENCIES)],
                connections=_connections(config.seed, index, company_id, created, self.modified_to),
            )
            accounting = [c for c in company.connections if c.source_type == "Accounting"]
            company.document = {
                "id": company_id,
                "name": name,
                "description": f"Fake company {index}",
                "platform": accounting[0].platform_name if accounting else "",
                "redirect": f"https://link.codat.io/company/{company_id}",
                "lastSync": utc_instant(self.modified_to) if company.has_data else None,
                "created": utc_instant(created),
                "createdByUserName": "Fake Codat",
                "products": ["lending"],
                "tags": {"index": str(index)},
                "referenceSubsidiaryCompanies": [],
                "dataConnections": [c.document for c in company.connections],
            }
            self.companies.append(company)
        self.by_id = {company.id: company for company in self.companies}
        self.company_table = Table.from_documents([c.id for c in self.companies], [c.document for c in self.companies])
        self._connection_tables: dict[str, Table] = {}
        self._record_sets: dict[tuple[str, str, str | None, str | None], Table] = {}

    def connection_table(self, company: Company) -> Table:
        """The company's connections as a pageable table."""
        table = self._connection_tables.get(company.id)
        if table is None:
            table = Table.from_documents([c.id for c in company.connections], [c.document for c in company.connections])
            self._connection_tables[company.id] = table
        return table

    def record_set(
        self,
        company: Company,
        data_type: DataType,
        connection: Connection | None = None,
        bank_account_id: str | None = None,
    ) -> Table:
        """
        The records of one list endpoint, generated on first use.

        :param company: the company.
        :param data_type: an incremental catalog type.
        :param connection: the connection, for connection-scoped types.
        :param bank_account_id: the bank account, for ``bankTransactions``.
        """
        key = (company.id, data_type.name, connection.id if connection else None, bank_account_id)
        table = self._record_sets.get(key)
        if table is None:
            table = self._generate(company, data_type, connection, bank_account_id)
            self._record_sets[key] = table
        return table

    def context(
        self,
        company: Company,
        data_type: DataType,
        connection: Connection | None = None,
        bank_account_id: str | None = None,
    ) -> RecordContext:
        """The record context of a record set (see :class:`RecordContext`)."""
        parent = _PARENT_TYPES.get(data_type.name)
        parent_ids = tuple(self.record_set(company, DATA_TYPES[parent], connection).keys) if parent else ()
        return RecordContext(
            seed=self.config.seed,
            company_id=company.id,
            company_name=company.name,
            currency=company.currency,
            count=lambda name: self.config.record_count(name, company.id, company.index),
            connection_id=connection.id if connection else None,
            bank_account_id=bank_account_id,
            parent_ids=parent_ids,
            platform_ids=self.config.platform_ids,
        )

    def bank_account_ids(self, company: Company, connection: Connection) -> list[str]:
        """The ids of a connection's ``bankAccounts`` records (the ``bankTransactions`` scopes)."""
        return list(self.record_set(company, DATA_TYPES["bankAccounts"], connection).keys)

    def _generate(
        self, company: Company, data_type: DataType, connection: Connection | None, bank_account_id: str | None
    ) -> Table:
        ctx = self.context(company, data_type, connection, bank_account_id)
        count = self.config.record_count(data_type.name, company.id, company.index)
        keys, bodies, modified_dates = [], [], []
        # One generator for the whole set, drawn in index order: seeding one per record would cost
        # as much as building the record. Records added later get their own (see new_record).
        rng = Random(stable_hash(ctx.seed, ctx.company_id, ctx.connection_id, ctx.bank_account_id, data_type.name))
        # Records are encoded as they are made: holding 100,000 nested dicts at once would cost
        # gigabytes and make the garbage collector rescan them over and over.
        for index in range(count):
            record, modified = self.new_record(ctx, data_type, index, rng=rng)
            keys.append(str(record.get("id") or f"record-{index}"))
            bodies.append(encode(record))
            modified_dates.append(modified)
        return Table(keys, bodies, modified_dates, keyed_by_id=data_type.name not in ID_LESS)

    def new_record(
        self,
        ctx: RecordContext,
        data_type: DataType,
        index: int,
        modified: int | None = None,
        rng: Random | None = None,
    ) -> tuple[dict[str, Any], int]:
        """
        Generate record ``index`` of a record set.

        :param ctx: the record set's context.
        :param data_type: its catalog entry.
        :param index: the record's position at creation (it decides the id).
        :param modified: its ``modifiedDate`` (epoch seconds); drawn from the configured range if None.
        :param rng: the random generator to draw from; one seeded for this record if None.
        :return: the record and its ``modifiedDate``.
        """
        if rng is None:
            rng = Random(
                stable_hash(ctx.seed, ctx.company_id, ctx.connection_id, ctx.bank_account_id, data_type.name, index)
            )
        drawn = self.modified_from + int(rng.random() * (self.modified_to - self.modified_from))
        modified = drawn if modified is None else modified
        deleted = data_type.has_is_deleted and rng.random() < self.config.deleted_ratio
        return build_record(ctx, data_type, index, modified, deleted, rng), modified

    def snapshot(self, company: Company, data_type: DataType, params: dict[str, str]) -> dict[str, Any]:
        """
        Company info or a financial report (not paged, no ``modifiedDate``).

        :param params: the report query parameters (``periodLength``, ``periodsToCompare``,
            ``startMonth``), already validated.
        """
        return SNAPSHOTS[data_type.name](self, company, params)


def _company_info(dataset: Dataset, company: Company, params: dict[str, Any]) -> dict[str, Any]:
    rng = Random(stable_hash(dataset.config.seed, company.id, "info"))
    accounting = next((c for c in company.connections if c.source_type == "Accounting"), None)
    return {
        "companyName": company.name,
        "companyLegalName": f"{company.name} (Registered)",
        "accountingPlatformRef": accounting.platform_name if accounting else None,
        "registrationNumber": f"{rng.randint(10_000_000, 99_999_999)}",
        "taxNumber": f"GB{rng.randint(100_000_000, 999_999_999)}",
        "financialYearStartDate": "2023-04-01T00:00:00",
        "ledgerLockDate": day(dataset.modified_from - 31 * _DAY),
        "baseCurrency": company.currency,
        "sourceUrls": {},
        "addresses": [
            {
                "type": "Billing",
                "line1": "1 Market Street",
                "line2": None,
                "city": "London",
                "region": None,
                "country": "United Kingdom",
                "postalCode": "EC1A 1BB",
            }
        ],
        "phoneNumbers": [{"number": "+44 20 7946 0000", "type": "Landline"}],
        "webLinks": [{"type": "Website", "url": f"https://{company.name.split()[0].lower()}.example.com"}],
        "createdDate": company.document["created"],
    }


def _periods(dataset: Dataset, params: dict[str, Any]) -> list[tuple[str, str, Random]]:
    """(first day, last day, rng) of each requested period, newest first."""
    year, month = params["startMonth"]
    periods = []
    for number in range(params["periodsToCompare"]):
        end_year, end_month = year, month - number * params["periodLength"]
        while end_month < 1:
            end_month += 12
            end_year -= 1
        start_year, start_month = end_year, end_month - params["periodLength"] + 1
        while start_month < 1:
            start_month += 12
            start_year -= 1
        next_year, next_month = (end_year + 1, 1) if end_month == 12 else (end_year, end_month + 1)
        last = parse_utc(f"{next_year:04d}-{next_month:02d}-01").timestamp() - _DAY
        rng = Random(stable_hash(dataset.config.seed, end_year, end_month, params["periodLength"]))
        periods.append((f"{start_year:04d}-{start_month:02d}-01T00:00:00", day(last), rng))
    return periods


def _line(rng: Random, name: str, accounts: tuple[int, ...]) -> dict[str, Any]:
    items = [
        {
            "accountId": stable_uuid("report-account", i),
            "name": CHART_OF_ACCOUNTS[i][1],
            "value": round(rng.uniform(1_000, 50_000), 2),
            "items": [],
        }
        for i in accounts
    ]
    return {"name": name, "value": round(sum(item["value"] for item in items), 2), "items": items}


def _report_header(dataset: Dataset, company: Company) -> dict[str, Any]:
    return {
        "currency": company.currency,
        "mostRecentAvailableMonth": day(dataset.modified_to - _DAY)[:8] + "01T00:00:00",
        "earliestAvailableMonth": "2022-01-01T00:00:00",
    }


def _balance_sheet(dataset: Dataset, company: Company, params: dict[str, Any]) -> dict[str, Any]:
    reports = []
    for _, last, rng in _periods(dataset, params):
        assets, liabilities = _line(rng, "Assets", (0, 1, 20, 22)), _line(rng, "Liabilities", (23, 24, 26))
        net = round(assets["value"] - liabilities["value"], 2)
        equity = {
            "name": "Equity",
            "value": net,
            "items": [
                {"accountId": stable_uuid("report-account", 27), "name": "Retained Earnings", "value": net, "items": []}
            ],
        }
        reports.append({"date": last, "assets": assets, "liabilities": liabilities, "equity": equity, "netAssets": net})
    return {**_report_header(dataset, company), "reports": reports}


def _profit_and_loss(dataset: Dataset, company: Company, params: dict[str, Any]) -> dict[str, Any]:
    reports = []
    for first, last, rng in _periods(dataset, params):
        income, cost = _line(rng, "Income", (2, 3)), _line(rng, "Cost of Sales", (5,))
        expenses, other_income = _line(rng, "Expenses", (6, 9, 15, 17)), _line(rng, "Other Income", (4,))
        other_expenses = {"name": "Other Expenses", "value": 0, "items": []}
        gross = round(income["value"] - cost["value"], 2)
        operating = round(gross - expenses["value"], 2)
        reports.append(
            {
                "fromDate": first,
                "toDate": last,
                "income": income,
                "costOfSales": cost,
                "grossProfit": gross,
                "expenses": expenses,
                "netOperatingProfit": operating,
                "otherExpenses": other_expenses,
                "otherIncome": other_income,
                "netOtherIncome": other_income["value"],
                "netProfit": round(operating + other_income["value"], 2),
            }
        )
    return {"reportBasis": "Accrual", **_report_header(dataset, company), "reports": reports}


def _cash_flow(dataset: Dataset, company: Company, params: dict[str, Any]) -> dict[str, Any]:
    reports = [
        {
            "fromDate": first,
            "toDate": last,
            "cashReceipts": _line(rng, "Cash Receipts", (2, 4)),
            "cashPayments": _line(rng, "Cash Payments", (6, 15, 17)),
        }
        for first, last, rng in _periods(dataset, params)
    ]
    return {"reportBasis": "Accrual", "reportInput": "Direct", **_report_header(dataset, company), "reports": reports}


SNAPSHOTS: dict[str, Callable[[Dataset, Company, dict[str, Any]], dict[str, Any]]] = {
    "info": _company_info,
    "balanceSheet": _balance_sheet,
    "profitAndLoss": _profit_and_loss,
    "cashFlowStatement": _cash_flow,
}


def sync_keys(company: Company) -> list[str]:
    """The ``dataType`` keys a company has synced data for: what ``dataStatus`` lists."""
    if not company.has_data:
        return []
    source_types = {c.source_type for c in company.connections if c.has_data}
    return [dt.key for dt in DATA_TYPES.values() if dt.scope is Scope.COMPANY or dt.source_type in source_types]
