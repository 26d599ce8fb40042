"""Record generators: one function per Codat data type, shaped like Codat's schemas.

Each generator builds one record from a :class:`RecordContext` (which company, connection and bank
account it belongs to, and how to name and reference other records) and a random generator seeded
for that record alone, so any record can be rebuilt on its own. The shared fields (``id`` first;
``metadata``, ``modifiedDate`` and ``sourceModifiedDate`` last) are added by :func:`build_record`.

References point at real records: ``customerRef.id`` of an invoice is the id of a customers record
of the same company, a bank transaction's ``accountId`` is its bank account's id, and so on, as long
as the referenced type has records.

The shapes follow the schemas in Codat's OpenAPI specs (``tests/testing/codat_schemas`` holds the
extracted copies the tests validate against). ``itemReceipts`` has no schema in any spec copy, so
its shape is modelled on bills. ``banking-accountBalances`` records have no ``id`` in Codat's
schema, and none here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any

from airflow_provider_codat.data_types import DATA_TYPES, DataType, Scope

_DAY = 86_400

CHART_OF_ACCOUNTS: tuple[tuple[str, str, str, str], ...] = (
    # (nominal code, name, type, category)
    ("090", "Business Bank Account", "Asset", "Asset.Current.Bank"),
    ("091", "Business Savings Account", "Asset", "Asset.Current.Bank"),
    ("200", "Sales", "Income", "Income.Revenue"),
    ("260", "Other Revenue", "Income", "Income.Other"),
    ("270", "Interest Income", "Income", "Income.Other"),
    ("310", "Cost of Goods Sold", "Expense", "Expense.CostOfSales"),
    ("400", "Advertising", "Expense", "Expense.Operating"),
    ("404", "Bank Fees", "Expense", "Expense.Operating"),
    ("408", "Cleaning", "Expense", "Expense.Operating"),
    ("412", "Consulting & Accounting", "Expense", "Expense.Operating"),
    ("420", "Entertainment", "Expense", "Expense.Operating"),
    ("429", "General Expenses", "Expense", "Expense.Operating"),
    ("433", "Insurance", "Expense", "Expense.Operating"),
    ("445", "Light, Power, Heating", "Expense", "Expense.Operating"),
    ("461", "Printing & Stationery", "Expense", "Expense.Operating"),
    ("469", "Rent", "Expense", "Expense.Operating"),
    ("473", "Repairs and Maintenance", "Expense", "Expense.Operating"),
    ("477", "Salaries", "Expense", "Expense.Operating"),
    ("489", "Telephone & Internet", "Expense", "Expense.Operating"),
    ("493", "Travel - National", "Expense", "Expense.Operating"),
    ("610", "Accounts Receivable", "Asset", "Asset.Current.Receivables"),
    ("620", "Prepayments", "Asset", "Asset.Current.Prepayments"),
    ("710", "Office Equipment", "Asset", "Asset.Fixed.Equipment"),
    ("800", "Accounts Payable", "Liability", "Liability.Current.Payables"),
    ("820", "VAT", "Liability", "Liability.Current.Tax"),
    ("825", "PAYE Payable", "Liability", "Liability.Current.Tax"),
    ("900", "Loan", "Liability", "Liability.NonCurrent.Loans"),
    ("960", "Retained Earnings", "Equity", "Equity.RetainedEarnings"),
    ("970", "Owner A Funds Introduced", "Equity", "Equity.Owner"),
)
TAX_RATES: tuple[tuple[str, str, float], ...] = (
    ("20% (VAT on Income)", "OUTPUT2", 20.0),
    ("20% (VAT on Expenses)", "INPUT2", 20.0),
    ("5% (VAT on Income)", "RROUTPUT", 5.0),
    ("Zero Rated Income", "ZERORATEDOUTPUT", 0.0),
    ("Exempt Expenses", "EXEMPTINPUT", 0.0),
    ("No VAT", "NONE", 0.0),
)
ITEMS: tuple[str, ...] = (
    "Consulting",
    "Design work",
    "Support plan",
    "Training day",
    "Licence",
    "Hosting",
    "Audit",
    "Office chairs",
    "Desk lamp",
    "Printer paper",
    "Laptop",
    "Monitor",
    "Installation",
    "Delivery",
)
PAYMENT_METHODS: tuple[tuple[str, str], ...] = (
    ("Bank transfer", "BankTransfer"),
    ("Cash", "Cash"),
    ("Cheque", "Check"),
    ("Credit card", "CreditCard"),
    ("Debit card", "DebitCard"),
    ("PayPal", "Other"),
)
TRACKING_CATEGORIES: tuple[str, ...] = (
    "Region",
    "North",
    "South",
    "East",
    "West",
    "Department",
    "Sales",
    "Operations",
    "Marketing",
)
JOURNALS: tuple[tuple[str, str], ...] = (
    ("General journal", "GJ"),
    ("Sales journal", "SJ"),
    ("Purchases journal", "PJ"),
    ("Cash receipts", "CR"),
    ("Cash payments", "CP"),
)
BANKING_CATEGORIES: tuple[str, ...] = (
    "Income",
    "Salary",
    "Transfers",
    "Groceries",
    "Travel",
    "Utilities",
    "Rent",
    "Fees",
    "Dining",
)
_NAME_FIRST = (
    "Bright",
    "Northwind",
    "Blue",
    "Summit",
    "Harbour",
    "Oak",
    "Silver",
    "Red",
    "Granite",
    "Maple",
    "Cobalt",
    "Meadow",
    "Falcon",
    "Quarry",
    "Riverside",
    "Atlas",
    "Beacon",
    "Copper",
    "Delta",
    "Elm",
)
_NAME_SECOND = (
    "Design",
    "Logistics",
    "Foods",
    "Consulting",
    "Builders",
    "Analytics",
    "Studios",
    "Supplies",
    "Engineering",
    "Media",
    "Outdoor",
    "Pharmacy",
    "Robotics",
    "Textiles",
    "Ventures",
    "Works",
)
_NAME_SUFFIX = ("Ltd", "LLP", "Inc", "& Co", "Group", "plc")
_PEOPLE = ("Alex Morgan", "Sam Patel", "Jo Williams", "Chris Okafor", "Priya Shah", "Dana Kim")
_CITIES = (
    ("London", "Greater London", "EC1A 1BB"),
    ("Manchester", "Greater Manchester", "M1 1AE"),
    ("Leeds", "West Yorkshire", "LS1 4AP"),
    ("Bristol", "Bristol", "BS1 4DJ"),
    ("Glasgow", "Glasgow City", "G1 1XQ"),
    ("Cardiff", "Cardiff", "CF10 1EP"),
)
_MERCHANTS = ("Tesco", "Trainline", "British Gas", "Amazon", "Pret A Manger", "Uber", "HMRC", "Stripe")


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash of the parts that, unlike ``hash()``, is the same in every process."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_uuid(*parts: Any) -> str:
    """A uuid-shaped (version 4 layout) id derived from the parts."""
    h = bytearray(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).digest())
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def utc_instant(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the format of ``modifiedDate``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def local_instant(epoch: float) -> str:
    """A zone-less date-time, as ``sourceModifiedDate`` often is."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def day(epoch: float) -> str:
    """A date at midnight without a zone, the format of issue and due dates."""
    return time.strftime("%Y-%m-%dT00:00:00", time.gmtime(epoch))


def business_name(*parts: Any) -> str:
    """A made-up company name, the same for the same parts."""
    h = stable_hash("name", *parts)
    first = _NAME_FIRST[h % len(_NAME_FIRST)]
    second = _NAME_SECOND[(h >> 8) % len(_NAME_SECOND)]
    return f"{first} {second} {_NAME_SUFFIX[(h >> 16) % len(_NAME_SUFFIX)]}"


@dataclass(frozen=True)
class RecordContext:
    """
    Where a record set lives, and how its records name and reference other records.

    :param seed: the data seed.
    :param company_id: the company's id.
    :param company_name: the company's name.
    :param currency: the company's base currency.
    :param count: ``data type name -> record count`` of this company's company-scoped sets, so
        references point at records that exist.
    :param connection_id: the connection, for connection-scoped sets.
    :param bank_account_id: the bank account, for ``bankTransactions``.
    :param parent_ids: ids of the records this set's records belong to: the connection's bank
        accounts (for accountTransactions) or banking accounts (for banking-* types).
    :param platform_ids: give connection-scoped records platform-style ids (see the config knob).
    """

    seed: int
    company_id: str
    company_name: str
    currency: str
    count: Callable[[str], int]
    connection_id: str | None = None
    bank_account_id: str | None = None
    parent_ids: tuple[str, ...] = ()
    platform_ids: bool = False
    # Ids and references are derived by hashing; a large record set asks for the same few again
    # and again, so they are memoised per context.
    _memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def _memoised(self, key: Any, build: Callable[[], Any]) -> Any:
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value

    def record_id(self, data_type: str, index: int) -> str:
        """The id of record ``index`` of a company-scoped type, or of a type in this set's scope."""
        if data_type in _COMPANY_SCOPED:
            return self._memoised((data_type, index), lambda: stable_uuid(self.seed, self.company_id, data_type, index))
        if self.platform_ids:
            return str(index + 1)
        return stable_uuid(self.seed, self.company_id, self.connection_id, self.bank_account_id, data_type, index)

    def pick(self, data_type: str, rng: Random) -> int:
        """A random record index of a type in this company (0 if it has no records)."""
        count = self._memoised(("count", data_type), lambda: self.count(data_type))
        return int(rng.random() * count) if count else 0

    def customer_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("customers", rng)
        return self._memoised(
            ("customerRef", index),
            lambda: {"id": self.record_id("customers", index), "companyName": self.customer_name(index)},
        )

    def supplier_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("suppliers", rng)
        return self._memoised(
            ("supplierRef", index),
            lambda: {"id": self.record_id("suppliers", index), "supplierName": self.supplier_name(index)},
        )

    def customer_name(self, index: int) -> str:
        return business_name(self.seed, self.company_id, "customers", index)

    def supplier_name(self, index: int) -> str:
        return business_name(self.seed, self.company_id, "suppliers", index)

    def account_ref(self, rng: Random, kinds: tuple[str, ...] = ()) -> dict[str, Any]:
        """A reference to a chart-of-accounts record, of one of ``kinds`` if the chart has one."""

        def eligible() -> list[int]:
            count = self.count("accounts") or 1
            matching = [i for i in range(min(count, 4 * len(CHART_OF_ACCOUNTS))) if chart_entry(i)[2] in kinds]
            return matching if kinds and matching else list(range(count))

        index = _choice(rng, self._memoised(("accounts", kinds), eligible))
        return self._memoised(
            ("accountRef", index), lambda: {"id": self.record_id("accounts", index), "name": chart_entry(index)[1]}
        )

    def tax_rate_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("taxRates", rng)

        def build() -> dict[str, Any]:
            name, _, rate = TAX_RATES[index % len(TAX_RATES)]
            return {"id": self.record_id("taxRates", index), "name": name, "effectiveTaxRate": rate}

        return self._memoised(("taxRateRef", index), build)

    def item_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("items", rng)
        return self._memoised(
            ("itemRef", index), lambda: {"id": self.record_id("items", index), "name": ITEMS[index % len(ITEMS)]}
        )

    def tracking_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("trackingCategories", rng)
        name = TRACKING_CATEGORIES[index % len(TRACKING_CATEGORIES)]
        return self._memoised(
            ("trackingRef", index), lambda: {"id": self.record_id("trackingCategories", index), "name": name}
        )

    def payment_method_ref(self, rng: Random) -> dict[str, Any]:
        index = self.pick("paymentMethods", rng)
        name = PAYMENT_METHODS[index % len(PAYMENT_METHODS)][0]
        return self._memoised(
            ("paymentMethodRef", index), lambda: {"id": self.record_id("paymentMethods", index), "name": name}
        )


#: Types whose ids depend on the company only (the catalog says which).
_COMPANY_SCOPED = frozenset(name for name, dt in DATA_TYPES.items() if dt.scope is Scope.COMPANY and dt.incremental)


def chart_entry(index: int) -> tuple[str, str, str, str]:
    """Account ``index`` of the chart: (nominal code, name, type, category); it repeats numbered."""
    code, name, kind, category = CHART_OF_ACCOUNTS[index % len(CHART_OF_ACCOUNTS)]
    cycle = index // len(CHART_OF_ACCOUNTS)
    return (f"{code}{cycle}" if cycle else code, f"{name} {cycle + 1}" if cycle else name, kind, category)


# Random's randint/choice/uniform cost several times random(); these helpers are what makes
# generating 100,000 invoices take seconds rather than tens of seconds.


def _int(rng: Random, low: int, high: int) -> int:
    """A random integer in ``[low, high]``."""
    return low + int(rng.random() * (high - low + 1))


def _choice(rng: Random, options: Sequence[Any]) -> Any:
    return options[int(rng.random() * len(options))]


def _money(rng: Random, low: float, high: float) -> float:
    return round(low + (high - low) * rng.random(), 2)


def _address(rng: Random, kind: str = "Billing") -> dict[str, Any]:
    city, region, postcode = _choice(rng, _CITIES)
    return {
        "type": kind,
        "line1": f"{_int(rng, 1, 250)} High Street",
        "line2": None,
        "city": city,
        "region": region,
        "country": "United Kingdom",
        "postalCode": postcode,
    }


def _line_items(
    ctx: RecordContext, rng: Random, extra: Callable[[Random], dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], float, float]:
    """One to three line items; returns them with their sub-total and tax total."""
    lines, sub_total, tax_total = [], 0.0, 0.0
    for _ in range(_int(rng, 1, 3)):
        item = ctx.item_ref(rng)
        tax_rate = ctx.tax_rate_ref(rng)
        quantity = _int(rng, 1, 10)
        unit = _money(rng, 5, 400)
        net = round(unit * quantity, 2)
        tax = round(net * tax_rate["effectiveTaxRate"] / 100, 2)
        line = {
            "description": f"{item['name']} - {_choice(rng, ('monthly', 'one-off', 'per unit', 'per day'))}",
            "unitAmount": unit,
            "quantity": quantity,
            "discountAmount": 0,
            "discountPercentage": 0,
            "subTotal": net,
            "taxAmount": tax,
            "totalAmount": round(net + tax, 2),
            "accountRef": ctx.account_ref(rng, ("Income", "Expense")),
            "taxRateRef": tax_rate,
            "itemRef": item,
            "trackingCategoryRefs": [ctx.tracking_ref(rng)],
        }
        if extra is not None:
            line.update(extra(rng))
        lines.append(line)
        sub_total += net
        tax_total += tax
    return lines, round(sub_total, 2), round(tax_total, 2)


def _tracking(customer: bool) -> Callable[[Random], dict[str, Any]]:
    kinds = ("Unknown", "NotApplicable", "Customer") if customer else ("Unknown", "NotApplicable")

    def extra(rng: Random) -> dict[str, Any]:
        return {"tracking": {"categoryRefs": [], "isBilledTo": _choice(rng, kinds), "isRebilledTo": "NotApplicable"}}

    return extra


def _allocation(ctx: RecordContext, rng: Random, amount: float, when: int, data_type: str) -> dict[str, Any]:
    currency = ctx.currency
    return {
        "payment": {
            "id": ctx.record_id(data_type, ctx.pick(data_type, rng)),
            "note": None,
            "reference": f"REF-{_int(rng, 1000, 99999)}",
            "accountRef": ctx.account_ref(rng, ("Asset",)),
            "currency": currency,
            "currencyRate": 1,
            "paidOnDate": day(when),
            "totalAmount": amount,
        },
        "allocation": {"currency": currency, "currencyRate": 1, "allocatedOnDate": day(when), "totalAmount": amount},
    }


def _currency(ctx: RecordContext, rng: Random) -> tuple[str, float]:
    if rng.random() < 0.1:
        foreign = "EUR" if ctx.currency != "EUR" else "USD"
        return foreign, round(rng.uniform(0.7, 1.4), 4)
    return ctx.currency, 1


def _document_dates(rng: Random, modified: int) -> tuple[int, int]:
    issued = modified - _int(rng, 0, 60) * _DAY
    return issued, issued + 30 * _DAY


# Generators: (context, rng, index, modified epoch) -> record without the shared fields.


def gen_accounts(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    code, name, kind, category = chart_entry(index)
    return {
        "nominalCode": code,
        "name": name,
        "description": f"{name} ({kind.lower()})",
        "fullyQualifiedCategory": category,
        "fullyQualifiedName": f"{category}.{name}",
        "currency": ctx.currency,
        "currentBalance": _money(rng, -50_000, 250_000),
        "type": kind,
        "status": "Active" if rng.random() > 0.05 else "Archived",
        "isBankAccount": category.endswith("Bank"),
        "validDatatypeLinks": [],
    }


def _contact_party(ctx: RecordContext, rng: Random, name: str) -> dict[str, Any]:
    slug = name.split()[0].lower()
    return {
        "contactName": _choice(rng, _PEOPLE),
        "emailAddress": f"accounts@{slug}.example.com",
        "phone": f"+44 20 7{_int(rng, 100, 999)} {_int(rng, 1000, 9999)}",
        "addresses": [_address(rng)],
        "registrationNumber": f"{_int(rng, 10_000_000, 99_999_999)}",
        "taxNumber": f"GB{_int(rng, 100_000_000, 999_999_999)}",
        "status": "Active" if rng.random() > 0.1 else "Archived",
    }


def gen_customers(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    name = ctx.customer_name(index)
    party = _contact_party(ctx, rng, name)
    return {
        "customerName": name,
        **party,
        "defaultCurrency": ctx.currency,
        "contacts": [
            {
                "name": party["contactName"],
                "email": party["emailAddress"],
                "phone": [{"number": party["phone"], "type": "Primary"}],
                "address": party["addresses"][0],
                "status": "Active",
                "modifiedDate": utc_instant(modified),
            }
        ],
    }


def gen_suppliers(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    name = ctx.supplier_name(index)
    return {"supplierName": name, **_contact_party(ctx, rng, name), "defaultCurrency": ctx.currency}


def gen_invoices(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    issued, due = _document_dates(rng, modified)
    currency, rate = _currency(ctx, rng)
    lines, sub_total, tax = _line_items(ctx, rng, lambda r: {"isDirectIncome": False, **_tracking(False)(r)})
    total = round(sub_total + tax, 2)
    status = _choice(rng, ("Draft", "Submitted", "Submitted", "PartiallyPaid", "Paid", "Paid", "Void"))
    paid = {"Paid": total, "PartiallyPaid": round(total / 2, 2)}.get(status, 0)
    record = {
        "invoiceNumber": f"INV-{index + 1:05d}",
        "customerRef": ctx.customer_ref(rng),
        "salesOrderRefs": [],
        "issueDate": day(issued),
        "dueDate": day(due),
        "currency": currency,
        "currencyRate": rate,
        "lineItems": lines,
        "paymentAllocations": [_allocation(ctx, rng, paid, due - _DAY, "payments")] if paid else [],
        "withholdingTax": [],
        "totalDiscount": 0,
        "subTotal": sub_total,
        "additionalTaxAmount": 0,
        "additionalTaxPercentage": 0,
        "totalTaxAmount": tax,
        "totalAmount": total,
        "amountDue": round(total - paid, 2),
        "discountPercentage": 0,
        "status": status,
        "note": _choice(rng, (None, "Thank you for your business.", "Payment due within 30 days.")),
    }
    if status == "Paid":
        record["paidOnDate"] = day(due - _DAY)
    return record


def _credit_note(ctx: RecordContext, rng: Random, modified: int, *, supplier: bool) -> dict[str, Any]:
    issued, _ = _document_dates(rng, modified)
    currency, rate = _currency(ctx, rng)
    extra = _tracking(True) if supplier else (lambda r: {"isDirectIncome": False, **_tracking(False)(r)})
    lines, sub_total, tax = _line_items(ctx, rng, extra)
    total = round(sub_total + tax, 2)
    status = _choice(rng, ("Draft", "Submitted", "Paid", "Void"))
    return {
        "totalAmount": total,
        "totalDiscount": 0,
        "subTotal": sub_total,
        "totalTaxAmount": tax,
        "discountPercentage": 0,
        "remainingCredit": 0 if status == "Paid" else total,
        "status": status,
        "issueDate": day(issued),
        "allocatedOnDate": day(issued + 7 * _DAY),
        "currency": currency,
        "currencyRate": rate,
        "lineItems": lines,
        "paymentAllocations": [],
        "withholdingTax": [],
        "note": None,
    }


def gen_credit_notes(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return {
        "creditNoteNumber": f"CN-{index + 1:05d}",
        "customerRef": ctx.customer_ref(rng),
        **_credit_note(ctx, rng, modified, supplier=False),
        "additionalTaxAmount": 0,
        "additionalTaxPercentage": 0,
    }


def gen_bill_credit_notes(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return {
        "billCreditNoteNumber": f"BCN-{index + 1:05d}",
        "supplierRef": ctx.supplier_ref(rng),
        **_credit_note(ctx, rng, modified, supplier=True),
    }


def _payment_lines(rng: Random, when: int, amount: float, link_type: str, link_id: str) -> list[dict[str, Any]]:
    return [
        {
            "amount": amount,
            "allocatedOnDate": day(when),
            "links": [{"type": link_type, "id": link_id, "amount": -amount, "currencyRate": 1}],
        }
    ]


def gen_payments(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    when = modified - _int(rng, 0, 10) * _DAY
    amount = _money(rng, 20, 5_000)
    invoice_id = ctx.record_id("invoices", ctx.pick("invoices", rng))
    return {
        "paymentMethodRef": ctx.payment_method_ref(rng),
        "totalAmount": amount,
        "currency": ctx.currency,
        "currencyRate": 1,
        "date": day(when),
        "note": None,
        "accountRef": ctx.account_ref(rng, ("Asset",)),
        "customerRef": ctx.customer_ref(rng),
        "reference": f"PAY-{index + 1:05d}",
        "lines": _payment_lines(rng, when, amount, "Invoice", invoice_id),
    }


def gen_bills(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    issued, due = _document_dates(rng, modified)
    currency, rate = _currency(ctx, rng)
    lines, sub_total, tax = _line_items(ctx, rng, lambda r: {"isDirectCost": False, **_tracking(True)(r)})
    total = round(sub_total + tax, 2)
    status = _choice(rng, ("Draft", "Open", "Open", "PartiallyPaid", "Paid", "Paid", "Void"))
    paid = {"Paid": total, "PartiallyPaid": round(total / 2, 2)}.get(status, 0)
    return {
        "reference": f"BILL-{index + 1:05d}",
        "supplierRef": ctx.supplier_ref(rng),
        "purchaseOrderRefs": [],
        "issueDate": day(issued),
        "dueDate": day(due),
        "currency": currency,
        "currencyRate": rate,
        "lineItems": lines,
        "withholdingTax": [],
        "status": status,
        "subTotal": sub_total,
        "taxAmount": tax,
        "totalAmount": total,
        "amountDue": round(total - paid, 2),
        "note": None,
        "paymentAllocations": [_allocation(ctx, rng, paid, due - _DAY, "billPayments")] if paid else [],
    }


def gen_bill_payments(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    when = modified - _int(rng, 0, 10) * _DAY
    amount = _money(rng, 20, 5_000)
    bill_id = ctx.record_id("bills", ctx.pick("bills", rng))
    return {
        "supplierRef": ctx.supplier_ref(rng),
        "accountRef": ctx.account_ref(rng, ("Asset",)),
        "totalAmount": amount,
        "currency": ctx.currency,
        "currencyRate": 1,
        "date": day(when),
        "note": None,
        "paymentMethodRef": ctx.payment_method_ref(rng),
        "reference": f"BP-{index + 1:05d}",
        "lines": _payment_lines(rng, when, -amount, "Bill", bill_id),
    }


def gen_journal_entries(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    posted = modified - _int(rng, 0, 20) * _DAY
    amount = _money(rng, 10, 10_000)
    journal = ctx.pick("journals", rng)
    lines = [
        {
            "description": description,
            "netAmount": net,
            "currency": ctx.currency,
            "accountRef": ctx.account_ref(rng),
            "tracking": {"recordRefs": []},
        }
        for description, net in (("Debit", amount), ("Credit", -amount))
    ]
    return {
        "description": _choice(rng, ("Month-end accrual", "Depreciation", "Payroll", "Correction")),
        "postedOn": day(posted),
        "createdOn": utc_instant(posted),
        "updatedOn": utc_instant(modified),
        "journalRef": {"id": ctx.record_id("journals", journal), "name": JOURNALS[journal % len(JOURNALS)][0]},
        "recordRef": {"id": ctx.record_id("invoices", ctx.pick("invoices", rng)), "dataType": "invoices"},
        "journalLines": lines,
    }


def gen_journals(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    name, code = JOURNALS[index % len(JOURNALS)]
    return {
        "journalCode": f"{code}{index // len(JOURNALS) or ''}",
        "name": name,
        "type": "General",
        "parentId": None,
        "hasChildren": False,
        "status": "Active",
        "createdOn": utc_instant(modified - 365 * _DAY),
    }


def gen_tax_rates(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    name, code, rate = TAX_RATES[index % len(TAX_RATES)]
    return {
        "name": name,
        "code": code,
        "effectiveTaxRate": rate,
        "totalTaxRate": rate,
        "status": "Active",
        "components": [{"name": name, "rate": rate, "isCompound": False}],
        "validDatatypeLinks": [],
    }


def gen_tracking_categories(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    # Every fifth category is a parent; the four after it are its children.
    parent = index - index % 5
    return {
        "name": TRACKING_CATEGORIES[index % len(TRACKING_CATEGORIES)],
        "parentId": None if parent == index else ctx.record_id("trackingCategories", parent),
        "hasChildren": parent == index,
        "status": "Active",
    }


def gen_payment_methods(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    name, kind = PAYMENT_METHODS[index % len(PAYMENT_METHODS)]
    return {"name": name, "type": kind, "status": "Active"}


def gen_items(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    price = _money(rng, 5, 500)
    return {
        "name": ITEMS[index % len(ITEMS)],
        "code": f"ITEM-{index + 1:04d}",
        "itemStatus": "Active",
        "type": _choice(rng, ("Inventory", "NonInventory", "Service")),
        "isBillItem": True,
        "isInvoiceItem": True,
        "billItem": {
            "description": "Purchase",
            "unitPrice": round(price * 0.6, 2),
            "accountRef": ctx.account_ref(rng, ("Expense",)),
            "taxRateRef": ctx.tax_rate_ref(rng),
        },
        "invoiceItem": {
            "description": "Sale",
            "unitPrice": price,
            "accountRef": ctx.account_ref(rng, ("Income",)),
            "taxRateRef": ctx.tax_rate_ref(rng),
        },
    }


def _order(
    ctx: RecordContext, rng: Random, modified: int, extra: Callable[[Random], dict[str, Any]] | None
) -> dict[str, Any]:
    issued, due = _document_dates(rng, modified)
    currency, rate = _currency(ctx, rng)
    lines, sub_total, tax = _line_items(ctx, rng, extra)
    return {
        "status": _choice(rng, ("Draft", "Open", "Open", "Closed", "Void")),
        "issueDate": day(issued),
        "expectedDeliveryDate": day(due - 15 * _DAY),
        "currency": currency,
        "currencyRate": rate,
        "lineItems": lines,
        "subTotal": sub_total,
        "totalTaxAmount": tax,
        "totalDiscount": 0,
        "totalAmount": round(sub_total + tax, 2),
        "note": None,
        "shipTo": {
            "address": _address(rng, "Delivery"),
            "contact": {"name": _choice(rng, _PEOPLE), "email": "goods-in@example.com", "phone": None},
        },
    }


def gen_purchase_orders(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    order = _order(ctx, rng, modified, None)
    return {
        "purchaseOrderNumber": f"PO-{index + 1:05d}",
        "supplierRef": ctx.supplier_ref(rng),
        **order,
        "deliveryDate": None,
        "paymentDueDate": order["expectedDeliveryDate"],
    }


def gen_sales_orders(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return {
        "salesOrderNumber": f"SO-{index + 1:05d}",
        "customerPurchaseOrderNumber": f"CPO-{_int(rng, 1000, 9999)}",
        "customerRef": ctx.customer_ref(rng),
        "invoicingStatus": _choice(rng, ("NotInvoiced", "PartiallyInvoiced", "Invoiced")),
        **_order(ctx, rng, modified, lambda r: {"tracking": {"recordRefs": []}}),
    }


def gen_account_transactions(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    amount = _money(rng, -5_000, 5_000)
    bank = ctx.parent_ids[index % len(ctx.parent_ids)] if ctx.parent_ids else ctx.record_id("bankAccounts", 0)
    data_type = _choice(rng, ("payments", "billPayments", "invoices", "bills"))
    return {
        "transactionId": ctx.record_id(data_type, ctx.pick(data_type, rng)),
        "note": None,
        "bankAccountRef": {"id": bank, "name": "Business Bank Account"},
        "date": day(modified - _int(rng, 0, 10) * _DAY),
        "status": _choice(rng, ("Unreconciled", "Reconciled")),
        "lines": [
            {
                "description": "Bank line",
                "recordRef": {"id": ctx.record_id(data_type, 0), "dataType": data_type},
                "amount": amount,
            }
        ],
        "currency": ctx.currency,
        "currencyRate": 1,
        "totalAmount": amount,
    }


def gen_bank_accounts(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    balance = _money(rng, -2_000, 80_000)
    kind = "Debit" if index % 3 else "Credit"
    return {
        "accountName": ("Business Current Account", "Business Savings", "Company Credit Card")[index % 3]
        + (f" {index // 3 + 1}" if index >= 3 else ""),
        "accountType": kind,
        "nominalCode": f"09{index}",
        "sortCode": f"{_int(rng, 10, 99)}-{_int(rng, 10, 99)}-{_int(rng, 10, 99)}",
        "accountNumber": f"{_int(rng, 10_000_000, 99_999_999)}",
        "iBan": None,
        "institution": _choice(rng, ("Barclays", "HSBC", "Lloyds", "NatWest", "Monzo Business")),
        "currency": ctx.currency,
        "balance": balance,
        "availableBalance": balance,
        "overdraftLimit": 1_000 if kind == "Debit" else 5_000,
        "status": "Active",
    }


def gen_direct_costs(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return _direct(ctx, rng, index, modified, "suppliers", {"tracking": {"recordRefs": []}})


def gen_direct_incomes(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return _direct(ctx, rng, index, modified, "customers", None)


def _direct(
    ctx: RecordContext, rng: Random, index: int, modified: int, contact_type: str, line_extra: dict[str, Any] | None
) -> dict[str, Any]:
    issued = modified - _int(rng, 0, 20) * _DAY
    lines, sub_total, tax = _line_items(ctx, rng, (lambda r: line_extra) if line_extra else None)
    total = round(sub_total + tax, 2)
    return {
        "reference": f"DIR-{index + 1:05d}",
        "note": None,
        "contactRef": {"id": ctx.record_id(contact_type, ctx.pick(contact_type, rng)), "dataType": contact_type},
        "issueDate": day(issued),
        "currency": ctx.currency,
        "currencyRate": 1,
        "lineItems": lines,
        "paymentAllocations": [_allocation(ctx, rng, total, issued, "payments")],
        "subTotal": sub_total,
        "taxAmount": tax,
        "totalAmount": total,
    }


def gen_transfers(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    amount = _money(rng, 100, 20_000)
    banks = ctx.parent_ids or (ctx.record_id("bankAccounts", 0),)
    source, target = banks[index % len(banks)], banks[(index + 1) % len(banks)]
    return {
        "description": "Transfer between accounts",
        "date": day(modified - _int(rng, 0, 10) * _DAY),
        "from": {"accountRef": {"id": source, "dataType": "bankAccounts"}, "amount": amount, "currency": ctx.currency},
        "to": {"accountRef": {"id": target, "dataType": "bankAccounts"}, "amount": amount, "currency": ctx.currency},
        "status": _choice(rng, ("Unreconciled", "Reconciled")),
        "depositedRecordRefs": [],
        "trackingCategoryRefs": [],
    }


def gen_item_receipts(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    issued, _ = _document_dates(rng, modified)
    lines, sub_total, tax = _line_items(ctx, rng)
    return {
        "itemReceiptNumber": f"IR-{index + 1:05d}",
        "supplierRef": ctx.supplier_ref(rng),
        "issueDate": day(issued),
        "currency": ctx.currency,
        "currencyRate": 1,
        "lineItems": lines,
        "subTotal": sub_total,
        "totalTaxAmount": tax,
        "totalAmount": round(sub_total + tax, 2),
        "status": _choice(rng, ("Received", "Closed")),
        "note": None,
    }


def gen_bank_transactions(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    amount = _money(rng, -3_000, 3_000)
    return {
        "accountId": ctx.bank_account_id,
        "clearedOnDate": day(modified - _int(rng, 0, 5) * _DAY),
        "description": f"{_choice(rng, _MERCHANTS)} {_int(rng, 100000, 999999)}",
        "reconciled": rng.random() < 0.6,
        "amount": amount,
        "balance": _money(rng, 0, 50_000),
        "transactionType": ("Credit" if amount >= 0 else _choice(rng, ("Debit", "Pos", "DirectDebit", "Fee"))),
    }


def gen_banking_accounts(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    current = _money(rng, 0, 60_000)
    number = f"{_int(rng, 10_000_000, 99_999_999)}"
    return {
        "name": ("Business Current Account", "Business Reserve", "Business Card")[index % 3],
        "informalName": None,
        "holder": ctx.company_name,
        "type": "Credit" if index % 3 == 2 else "Debit",
        "balance": {"available": current, "current": current, "limit": 0},
        "identifiers": {
            "type": "Depository",
            "subtype": "checking",
            "number": number,
            "bankCode": f"{_int(rng, 100000, 999999)}",
            "iban": None,
            "bic": None,
            "maskedAccountNumber": f"****{number[-4:]}",
        },
        "currency": ctx.currency,
        "institution": {"id": "ob-natwest", "name": "NatWest"},
    }


def gen_banking_transactions(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    amount = _money(rng, -1_500, 1_500)
    category = ctx.pick("banking-transactionCategories", rng)
    posted = modified - _int(rng, 0, 3) * _DAY
    return {
        "accountId": ctx.parent_ids[index % len(ctx.parent_ids)] if ctx.parent_ids else "unknown",
        "description": f"{_choice(rng, _MERCHANTS)} {_int(rng, 1000, 9999)}",
        "amount": amount,
        "currency": ctx.currency,
        "postedDate": utc_instant(posted),
        "authorizedDate": utc_instant(posted - 3_600),
        "code": "Credit" if amount >= 0 else _choice(rng, ("Purchase", "DirectDebit", "Fee", "Transfer")),
        "merchantName": _choice(rng, _MERCHANTS),
        "transactionCategoryRef": {
            "id": ctx.record_id("banking-transactionCategories", category),
            "name": BANKING_CATEGORIES[category % len(BANKING_CATEGORIES)],
        },
    }


def gen_banking_account_balances(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    current = _money(rng, 0, 60_000)
    return {
        "accountId": ctx.parent_ids[index % len(ctx.parent_ids)] if ctx.parent_ids else "unknown",
        "balance": {"available": current, "current": current, "limit": 0},
        "date": day(modified),
    }


def gen_banking_transaction_categories(ctx: RecordContext, rng: Random, index: int, modified: int) -> dict[str, Any]:
    return {
        "name": BANKING_CATEGORIES[index % len(BANKING_CATEGORIES)],
        "parentId": None,
        "hasChildren": False,
        "status": "Active",
    }


GENERATORS: dict[str, Callable[[RecordContext, Random, int, int], dict[str, Any]]] = {
    "accounts": gen_accounts,
    "customers": gen_customers,
    "suppliers": gen_suppliers,
    "invoices": gen_invoices,
    "creditNotes": gen_credit_notes,
    "payments": gen_payments,
    "bills": gen_bills,
    "billPayments": gen_bill_payments,
    "billCreditNotes": gen_bill_credit_notes,
    "journalEntries": gen_journal_entries,
    "journals": gen_journals,
    "taxRates": gen_tax_rates,
    "trackingCategories": gen_tracking_categories,
    "paymentMethods": gen_payment_methods,
    "items": gen_items,
    "purchaseOrders": gen_purchase_orders,
    "salesOrders": gen_sales_orders,
    "accountTransactions": gen_account_transactions,
    "bankAccounts": gen_bank_accounts,
    "directCosts": gen_direct_costs,
    "directIncomes": gen_direct_incomes,
    "transfers": gen_transfers,
    "itemReceipts": gen_item_receipts,
    "bankTransactions": gen_bank_transactions,
    "banking-accounts": gen_banking_accounts,
    "banking-transactions": gen_banking_transactions,
    "banking-accountBalances": gen_banking_account_balances,
    "banking-transactionCategories": gen_banking_transaction_categories,
}

#: Types whose records carry no ``id`` in Codat's schema.
ID_LESS = frozenset({"banking-accountBalances"})


def build_record(
    ctx: RecordContext, data_type: DataType, index: int, modified: int, deleted: bool, rng: Random
) -> dict[str, Any]:
    """
    One complete record: ``id``, the type's fields, then ``metadata`` and the modified dates.

    :param ctx: where the record lives.
    :param data_type: its catalog entry.
    :param index: its position in the record set at creation.
    :param modified: its ``modifiedDate`` as epoch seconds.
    :param deleted: its ``metadata.isDeleted`` (ignored for types without ``metadata``).
    :param rng: the record's own random generator.
    """
    body = GENERATORS[data_type.name](ctx, rng, index, modified)
    record = body if data_type.name in ID_LESS else {"id": ctx.record_id(data_type.name, index), **body}
    if data_type.has_is_deleted:
        record["metadata"] = {"isDeleted": deleted}
    record["modifiedDate"] = utc_instant(modified)
    # Codat leaves sourceModifiedDate out for records deleted at source; otherwise it is the
    # platform's own, usually zone-less, timestamp from a little before the sync.
    if not deleted:
        record["sourceModifiedDate"] = local_instant(modified - _int(rng, 60, 3 * _DAY))
    return record
