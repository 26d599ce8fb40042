"""The knobs of the fake Codat API: what data it serves and which faults it injects.

Every knob is a field of :class:`FakeCodatConfig`. Set them when the fake starts (constructor, CLI
flags, ``FakeCodat(**knobs)``) or at run time (``FakeCodat.configure(**knobs)`` in-process, or
``POST /_fake/config`` with a JSON object of knobs from another thread or process).

*Data knobs* (:data:`DATA_KNOBS`) decide the generated data; changing one rebuilds the data set.
The others change behaviour only. Count-based faults ("the next N requests") are counters that
the server decrements as it injects them; each has a ``<fault>_path`` companion: when set, only
requests whose path and query string contain that substring count and fail.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: The API key the fake accepts unless configured otherwise.
DEFAULT_API_KEY = "fake-codat-api-key"

#: Count-based faults: knob name -> what a matching request gets.
COUNTED_FAULTS = ("fail_429", "fail_5xx", "drop_connection", "truncate_body", "slow_response")


@dataclass
class FakeCodatConfig:
    """
    Knobs of the fake Codat API. All have defaults; see the module docstring for how to set them.

    :param seed: seed of every generated value: the same seed gives the same companies, ids and
        records.
    :param companies: how many companies exist (default 250, so ``GET /companies`` pages).
    :param records_per_type: records per record set: per company for company-scoped types, per
        connection for connection-scoped types, per bank account for ``bankTransactions``.
    :param records: per data type overrides of ``records_per_type`` for every company, e.g.
        ``{"invoices": 500}``.
    :param company_records: per company overrides, keyed by company id or by company index as a
        string (``"0"`` is the first company), e.g. ``{"0": {"invoices": 100000}}``.
    :param modified_from: records' ``modifiedDate`` values are spread over
        ``[modified_from, modified_to)``, UTC.
    :param modified_to: see ``modified_from``.
    :param deleted_ratio: share of records (of types with ``metadata.isDeleted``) marked deleted.
    :param platform_ids: connection-scoped records (bank accounts among them) get ids as accounting
        platforms give them, short numeric strings unique only within their connection or bank
        account (QuickBooks Online's are), instead of UUIDs.
    :param api_key: the only key accepted in ``Authorization: Basic <base64(key)>``.
    :param latency_ms: delay added to every API request.
    :param sync_delay_s: how long a queued refresh stays ``Queued``/``Fetching`` before it completes
        (0: completes at once).
    :param max_page_size: larger ``pageSize`` values get a 400, as Codat documents (5000).
    :param page_size_cap: when set, larger ``pageSize`` values are silently clamped to it and the
        envelope reports the clamped size (the spec's undocumented 2000 limit).
    :param concurrency_limit: in-flight requests allowed per company; one more gets a 429 with
        ``Retry-After: 1`` (None: unlimited).
    :param daily_quota: requests allowed before every request gets the daily-quota 429; reported in
        ``X-Rate-Limit-Limit`` (None: Codat's ``1000 * (1 + companies)``).
    :param daily_quota_exhausted: answer every request with the daily-quota 429, whose
        ``Retry-After`` points at the next 00:00 UTC.
    :param retry_after_s: the ``Retry-After`` of ``fail_429`` answers.
    :param retry_after_format: ``"seconds"`` or ``"http-date"``: how every ``Retry-After`` is written.
    :param dates_only: the stricter reading of Codat's docs, which only show ``YYYY-MM-DD`` dates in
        queries: a query holding a full timestamp gets a 400.
    :param fail_429: the next N matching requests get a 429 (rate limited).
    :param fail_5xx: the next N matching requests get ``fail_5xx_status``.
    :param fail_5xx_status: 500 or 503 (or any status) for ``fail_5xx``.
    :param drop_connection: the next N matching responses send their headers and half their body,
        then the connection is closed.
    :param truncate_body: the next N matching responses are 200 with the first half of their body
        (and a Content-Length that matches it): invalid JSON.
    :param slow_response: the next N matching requests wait ``slow_response_s`` before answering.
    :param slow_response_s: see ``slow_response``.
    :param mutate_after_page: after page K of a matching list request is served, ``mutate_count``
        records from pages 1..K get ``modifiedDate`` = now (later than ``modified_to``), so they
        leave a window query and later pages shift backwards. Fires once, then resets to None.
    :param mutate_count: see ``mutate_after_page``.
    """

    # Data knobs.
    seed: int = 1
    companies: int = 250
    records_per_type: int = 20
    records: dict[str, int] = field(default_factory=dict)
    company_records: dict[str, dict[str, int]] = field(default_factory=dict)
    modified_from: str = "2024-01-01T00:00:00Z"
    modified_to: str = "2024-04-01T00:00:00Z"
    deleted_ratio: float = 0.05
    platform_ids: bool = False
    # Behaviour.
    api_key: str = DEFAULT_API_KEY
    latency_ms: float = 0.0
    sync_delay_s: float = 0.0
    max_page_size: int = 5000
    page_size_cap: int | None = None
    concurrency_limit: int | None = 10
    daily_quota: int | None = None
    daily_quota_exhausted: bool = False
    retry_after_s: int = 1
    retry_after_format: str = "seconds"
    dates_only: bool = False
    # Faults: counters, each with a path filter.
    fail_429: int = 0
    fail_429_path: str | None = None
    fail_5xx: int = 0
    fail_5xx_status: int = 503
    fail_5xx_path: str | None = None
    drop_connection: int = 0
    drop_connection_path: str | None = None
    truncate_body: int = 0
    truncate_body_path: str | None = None
    slow_response: int = 0
    slow_response_s: float = 5.0
    slow_response_path: str | None = None
    mutate_after_page: int | None = None
    mutate_count: int = 5
    mutate_path: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """
        Check knob values, so a typo fails when set rather than as odd behaviour later.

        :raises ValueError: on a bad value.
        """
        if self.companies < 0 or self.records_per_type < 0:
            raise ValueError("companies and records_per_type must be >= 0")
        if parse_utc(self.modified_from) >= parse_utc(self.modified_to):
            raise ValueError("modified_from must be before modified_to")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if not 0 <= self.deleted_ratio <= 1:
            raise ValueError("deleted_ratio must be between 0 and 1")
        if any(getattr(self, fault) < 0 for fault in COUNTED_FAULTS):
            raise ValueError(f"fault counters ({', '.join(COUNTED_FAULTS)}) must be >= 0")
        if self.page_size_cap is not None and self.page_size_cap < 1:
            raise ValueError("page_size_cap must be >= 1")
        from airflow_provider_codat.data_types import get_data_type

        for counts in (self.records, *self.company_records.values()):
            for name in counts:
                get_data_type(name)

    def replace(self, **knobs: Any) -> FakeCodatConfig:
        """
        A copy with some knobs changed.

        :param knobs: knob names and values.
        :raises TypeError: on an unknown knob name.
        """
        unknown = set(knobs) - KNOBS
        if unknown:
            raise TypeError(f"Unknown fake Codat knob(s): {', '.join(sorted(unknown))}")
        # Deep: the dict knobs must not be shared between the copies.
        return dataclasses.replace(copy.deepcopy(self), **knobs)

    def to_dict(self) -> dict[str, Any]:
        """The knobs as a JSON-able dict."""
        return dataclasses.asdict(self)

    def data_knobs(self) -> tuple[Any, ...]:
        """The values that decide the generated data, to tell whether it must be rebuilt."""
        return tuple(repr(getattr(self, name)) for name in sorted(DATA_KNOBS))

    def record_count(self, data_type: str, company_id: str, company_index: int) -> int:
        """
        How many records a record set of this company and data type holds.

        :param data_type: the catalog name.
        :param company_id: the company's id.
        :param company_index: the company's position, as used in ``company_records`` keys.
        """
        for key in (company_id, str(company_index)):
            per_company = self.company_records.get(key)
            if per_company and data_type in per_company:
                return per_company[data_type]
        return self.records.get(data_type, self.records_per_type)

    @property
    def quota(self) -> int:
        """The daily request allowance reported in ``X-Rate-Limit-Limit``."""
        return self.daily_quota if self.daily_quota is not None else 1000 * (1 + self.companies)


#: Every knob name.
KNOBS = frozenset(f.name for f in dataclasses.fields(FakeCodatConfig))

#: Knobs that decide the generated data.
DATA_KNOBS = frozenset(
    {
        "seed",
        "companies",
        "records_per_type",
        "records",
        "company_records",
        "modified_from",
        "modified_to",
        "deleted_ratio",
        "platform_ids",
    }
)


def parse_utc(value: str) -> datetime:
    """
    Parse an ISO 8601 date or date-time; a value without a zone is UTC.

    :param value: e.g. ``2024-01-01``, ``2024-01-01T00:00:00Z``, ``2024-01-01T00:00:00.123+01:00``.
    :raises ValueError: if it is not one.
    """
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
