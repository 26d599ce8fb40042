"""The fake Codat API's state and its Python API: what tests call to know and change the truth.

:class:`FakeCodat` owns the data set, the knobs, the injected faults and the statistics. The HTTP
layer (:mod:`.app`) asks it what to answer; tests call it directly (same process) or through the
``/_fake/`` admin endpoints (another process). Every public method is thread-safe: the server runs
in its own thread.
"""

from __future__ import annotations

import base64
import binascii
import collections
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_codat.data_types import DATA_TYPES, DataType, Scope, get_data_type
from airflow_provider_codat.testing.fake_codat.config import FakeCodatConfig, parse_utc
from airflow_provider_codat.testing.fake_codat.data import Company, Connection, Dataset, sync_keys
from airflow_provider_codat.testing.fake_codat.generators import local_instant, stable_uuid, utc_instant
from airflow_provider_codat.testing.fake_codat.query import QueryError
from airflow_provider_codat.testing.fake_codat.table import Table, encode

_UNSYNCED_MESSAGE = "The data set has not been requested."
_RATE_LIMITED_MESSAGE = "You have made too many requests in a given amount of time; please retry later."
_REQUEST_LOG_SIZE = 100_000


class CodatHTTPError(Exception):
    """
    An error answer, rendered in Codat's error shape.

    :param status: the HTTP status.
    :param message: Codat's ``error`` text.
    :param service: Codat's ``service`` name (``ClientsApi`` for companies, else ``PublicApi``).
    :param headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self, status: int, message: str, service: str = "PublicApi", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.service = service
        self.headers = headers or {}

    def body(self) -> bytes:
        """The JSON body Codat sends with this status."""
        return encode(error_body(self.status, self.message, self.service))


def error_body(status: int, message: str, service: str = "PublicApi") -> dict[str, Any]:
    """Codat's error body."""
    return {
        "statusCode": status,
        "service": service,
        "error": message,
        "correlationId": uuid.uuid4().hex,
        "canBeRetried": "Unknown",
        "detailedErrorCode": 0,
        "validation": None,
    }


@dataclass
class Admission:
    """What the HTTP layer must do with one API request, decided when it arrives."""

    company_id: str | None
    headers: dict[str, str]
    reject: CodatHTTPError | None = None
    latency_s: float = 0.0
    slow_s: float = 0.0
    drop_connection: bool = False
    truncate_body: bool = False
    #: The statistics current when the request arrived: a request still in flight across a reset
    #: (a client that timed out on a slow answer) must not count in the next test's statistics.
    stats: Any = None


@dataclass
class SyncOperation:
    """One queued refresh of one data type (a Codat pull operation)."""

    id: str
    company_id: str
    connection_id: str
    data_type: str
    requested: float
    completes: float
    outcome: str = "Complete"

    def status(self, now: float) -> str:
        if now >= self.completes:
            return self.outcome
        return "Queued" if now < (self.requested + self.completes) / 2 else "Fetching"

    def document(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        done = now >= self.completes
        document = {
            "id": self.id,
            "companyId": self.company_id,
            "connectionId": self.connection_id,
            "dataType": self.data_type,
            "status": status,
            "requested": utc_instant(self.requested),
            "progress": 100 if done else (10 if status == "Queued" else 50),
            "isCompleted": done and status == "Complete",
            "isErrored": done and status != "Complete",
        }
        if done:
            document["completed"] = utc_instant(self.completes)
        return document


@dataclass
class _Stats:
    requests: int = 0
    by_status: collections.Counter = field(default_factory=collections.Counter)
    by_path: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    rate_limited: int = 0
    faults: collections.Counter = field(default_factory=collections.Counter)
    pages_served: int = 0
    records_served: int = 0
    max_concurrency: int = 0
    max_concurrency_by_company: collections.Counter = field(default_factory=collections.Counter)
    mutations: list[dict[str, Any]] = field(default_factory=list)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=_REQUEST_LOG_SIZE))


class FakeCodat:
    """
    A fake Codat API's state: data, knobs, faults and statistics.

    :param config: the knobs to start with (and to return to on :meth:`reset`).
    :param knobs: knob overrides on top of ``config``.
    """

    def __init__(self, config: FakeCodatConfig | None = None, **knobs: Any) -> None:
        base = config or FakeCodatConfig()
        self._base = base.replace(**knobs)
        self._lock = threading.RLock()
        #: Where the fake is served (set by :class:`FakeCodatServer`), e.g. ``http://127.0.0.1:5123``.
        self.url: str | None = None
        self._inflight: collections.Counter = collections.Counter()
        self._dataset = Dataset(self._base)
        self._restore(self._base)

    # ----- knobs -----

    @property
    def config(self) -> FakeCodatConfig:
        """A copy of the current knobs (fault counters show what is left)."""
        with self._lock:
            return self._config.replace()

    @property
    def api_key(self) -> str:
        """The API key the fake accepts."""
        return self._config.api_key

    def configure(self, **knobs: Any) -> None:
        """
        Change knobs now. Changing a data knob rebuilds the data (and forgets changes made to it).

        :param knobs: knob names and values (see :class:`FakeCodatConfig`).
        :raises TypeError: on an unknown knob.
        :raises ValueError: on a bad value.
        """
        with self._lock:
            config = self._config.replace(**knobs)
            if config.data_knobs() != self._config.data_knobs():
                self._dataset = Dataset(config)
                self._forget_overrides()
            self._config = config

    def reset(self) -> None:
        """Return to the starting knobs and data, with no faults armed and zeroed statistics."""
        with self._lock:
            self._restore(self._base)

    def _restore(self, config: FakeCodatConfig) -> None:
        if self._dataset.dirty or self._dataset.config.data_knobs() != config.data_knobs():
            self._dataset = Dataset(config)
        self._config = config.replace()
        self._forget_overrides()
        self._stats = _Stats()
        self._inflight = collections.Counter()
        self._quota_used = 0

    def _forget_overrides(self) -> None:
        self._unsynced: set[tuple[str, str]] = set()
        self._unsupported: set[tuple[str, str]] = set()
        # (company, data type key, connection): unsupported by that connection's platform only.
        self._unsupported_on: set[tuple[str, str, str]] = set()
        self._syncs: dict[tuple[str, str], SyncOperation] = {}
        self._operations: dict[str, SyncOperation] = {}

    # ----- the truth -----

    def company_ids(self) -> list[str]:
        """Every company id, in the order ``GET /companies`` lists them."""
        with self._lock:
            return [company.id for company in self._dataset.companies]

    def company(self, company_id: str) -> dict[str, Any]:
        """A company as ``GET /companies/{id}`` returns it."""
        with self._lock:
            return self._company(company_id).document

    def connections(self, company_id: str) -> list[dict[str, Any]]:
        """A company's connections as ``GET /companies/{id}/connections`` lists them."""
        with self._lock:
            return [dict(c.document) for c in self._company(company_id).connections]

    def bank_account_ids(self, company_id: str, connection_id: str) -> list[str]:
        """The ids of a connection's bank accounts (the scopes of ``bankTransactions``)."""
        with self._lock:
            company = self._company(company_id)
            return self._dataset.bank_account_ids(company, self._connection(company, connection_id))

    def records(
        self,
        company_id: str,
        data_type: str,
        connection_id: str | None = None,
        bank_account_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """
        The records a full read of a list endpoint returns now, in the default order, including
        deleted ones. Empty when the endpoint would answer 409 or 404 (see :meth:`availability`).

        :param company_id: the company.
        :param data_type: catalog name or key.
        :param connection_id: for connection-scoped types; None reads every connection of the
            type's source type, one after another.
        :param bank_account_id: for ``bankTransactions``; None reads every bank account.
        """
        with self._lock:
            dt = self._incremental(data_type)
            if self.availability(company_id, dt.name, connection_id) != "available":
                return []
            return [
                document
                for table in self._tables(company_id, dt, connection_id, bank_account_id)
                for document in table.documents()
            ]

    def availability(self, company_id: str, data_type: str, connection_id: str | None = None) -> str:
        """
        Whether a list or snapshot endpoint serves data now.

        :return: ``"available"``, ``"unsynced"`` (answers 409) or ``"unsupported"`` (answers 404).
        """
        with self._lock:
            company = self._company(company_id)
            connection = self._connection(company, connection_id) if connection_id else None
            try:
                self._check_available(company, get_data_type(data_type), connection)
            except CodatHTTPError as error:
                return "unsupported" if error.status == 404 else "unsynced"
            return "available"

    def snapshot(self, company_id: str, data_type: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """
        Company info or a financial report as its endpoint returns it.

        :param params: the report's query parameters (``periodLength``, ``periodsToCompare``,
            ``startMonth``).
        """
        with self._lock:
            dt = get_data_type(data_type)
            return self._dataset.snapshot(self._company(company_id), dt, self._report_params(params or {}, dt))

    def modify_records(
        self,
        company_id: str,
        data_type: str,
        ids: Iterable[str] | None = None,
        count: int | None = None,
        modified_date: datetime | str | None = None,
        connection_id: str | None = None,
        bank_account_id: str | None = None,
        *,
        deleted: bool | None = None,
    ) -> list[str]:
        """
        Change records as a new Codat sync would: their ``modifiedDate`` moves (and
        ``sourceModifiedDate`` just before it); their place in the default order does not.

        :param company_id: the company.
        :param data_type: catalog name or key.
        :param ids: the records to change; or
        :param count: change the first ``count`` records (default order).
        :param modified_date: the new ``modifiedDate`` (datetime or ISO string); default now.
        :param connection_id: for connection-scoped types; default the first connection with data.
        :param bank_account_id: for ``bankTransactions``; default the connection's first account.
        :param deleted: also set ``metadata.isDeleted`` to this.
        :return: the keys (``id``) of the changed records.
        """
        with self._lock:
            dt = self._incremental(data_type)
            table = self._single_table(company_id, dt, connection_id, bank_account_id)
            if ids is not None:
                positions = [table.position(str(key)) for key in ids]
            elif count is not None:
                positions = list(range(min(count, len(table))))
            else:
                raise ValueError("Give the ids of the records to modify, or a count")
            if deleted is not None and not dt.has_is_deleted:
                raise ValueError(f"{dt.name} records have no metadata.isDeleted")
            epoch = self._epoch(modified_date)
            for position in positions:
                document = table.document(position)
                if deleted is not None:
                    document["metadata"] = {**document.get("metadata", {}), "isDeleted": deleted}
                self._stamp(document, epoch)
                table.put(position, document, epoch)
            self._dataset.dirty = True
            return [table.keys[position] for position in positions]

    def delete_records(
        self, company_id: str, data_type: str, ids: Iterable[str] | None = None, **kwargs: Any
    ) -> list[str]:
        """
        Mark records deleted at source, as Codat does: ``metadata.isDeleted`` becomes true and
        ``modifiedDate`` moves. Takes the arguments of :meth:`modify_records`.
        """
        return self.modify_records(company_id, data_type, ids, deleted=True, **kwargs)

    def add_records(
        self,
        company_id: str,
        data_type: str,
        count: int,
        modified_date: datetime | str | None = None,
        connection_id: str | None = None,
        bank_account_id: str | None = None,
    ) -> list[str]:
        """
        Add records at the end of the default order, as a sync that found new records would.

        :param count: how many.
        :param modified_date: their ``modifiedDate``; default now.
        :return: their keys (``id``).
        """
        with self._lock:
            dt = self._incremental(data_type)
            table = self._single_table(company_id, dt, connection_id, bank_account_id)
            company = self._company(company_id)
            connection = self._default_connection(company, dt, connection_id)
            account = self._default_account(company, dt, connection, bank_account_id)
            ctx = self._dataset.context(company, dt, connection, account)
            epoch = self._epoch(modified_date)
            first = len(table)
            for index in range(first, first + count):
                document, _ = self._dataset.new_record(ctx, dt, index, epoch)
                table.put(index, document, epoch)
            self._dataset.dirty = True
            return table.keys[first:]

    def set_unsynced(self, company_id: str, data_type: str, unsynced: bool = True) -> None:
        """
        Make a data type never synced for a company: its endpoints answer 409 "The data set has
        not been requested." and ``dataStatus`` holds only ``{"dataType": key}``, until a queued
        refresh of it completes.
        """
        with self._lock:
            key = (self._company(company_id).id, get_data_type(data_type).key)
            self._syncs.pop(key, None)
            (self._unsynced.add if unsynced else self._unsynced.discard)(key)

    def set_unsupported(
        self, company_id: str, data_type: str, unsupported: bool = True, connection_id: str | None = None
    ) -> None:
        """
        Make a data type unsupported by the company's platform: its endpoints answer 404
        "Datatype <key> not supported by platform(s) <platform>" and ``dataStatus`` says
        ``NotSupported``.

        :param connection_id: only this connection's platform lacks it (a company can hold
            connections on two platforms, e.g. an old one unlinked and a new one linked); the
            company's other connections still serve it, and ``dataStatus`` is unchanged.
        """
        with self._lock:
            key = (self._company(company_id).id, get_data_type(data_type).key)
            target, entry = (self._unsupported_on, (*key, connection_id)) if connection_id else (self._unsupported, key)
            (target.add if unsupported else target.discard)(entry)

    def warm(self, company_ids: Sequence[str] | None = None, data_types: Sequence[str] | None = None) -> None:
        """
        Generate record sets now rather than on first request (100,000 invoices take seconds).

        :param company_ids: default every company.
        :param data_types: default every incremental type.
        """
        names = data_types or [dt.name for dt in DATA_TYPES.values() if dt.incremental]
        for company_id in company_ids or self.company_ids():
            for name in names:
                with self._lock:
                    dt = self._incremental(name)
                    if self.availability(company_id, name) == "available":
                        self._tables(company_id, dt, None, None)

    # ----- statistics -----

    def stats(self) -> dict[str, Any]:
        """
        Counters since the last reset, JSON-able: ``requests``, ``by_status``, ``by_path`` (path ->
        status -> count), ``rate_limited`` (429s answered), ``faults`` (injected, by knob),
        ``pages_served``, ``records_served``, ``max_concurrency`` (in-flight requests of one company,
        highest seen), ``max_concurrency_by_company``, ``mutations`` (what ``mutate_after_page``
        changed), ``quota_remaining``.
        """
        with self._lock:
            s = self._stats
            return {
                "requests": s.requests,
                "by_status": {str(k): v for k, v in s.by_status.items()},
                "by_path": {path: {str(k): v for k, v in counts.items()} for path, counts in s.by_path.items()},
                "rate_limited": s.rate_limited,
                "faults": dict(s.faults),
                "pages_served": s.pages_served,
                "records_served": s.records_served,
                "max_concurrency": s.max_concurrency,
                "max_concurrency_by_company": dict(s.max_concurrency_by_company),
                "mutations": [dict(m) for m in s.mutations],
                "quota_remaining": max(self._config.quota - self._quota_used, 0),
            }

    def request_log(self) -> list[dict[str, Any]]:
        """Every API request since the last reset (up to 100,000): method, path, query, status."""
        with self._lock:
            return [dict(entry) for entry in self._stats.log]

    # ----- used by the HTTP layer -----

    def admit(self, method: str, path: str, query: str, authorization: str | None) -> Admission:
        """
        Account for an arriving API request and decide its fate (faults, limits, auth).

        The caller must call :meth:`finish` with the same admission once it has answered.
        """
        target = f"{path}?{query}" if query else path
        company_id = path.split("/")[2] if path.startswith("/companies/") else None
        with self._lock:
            config = self._config
            self._quota_used += 1
            now = time.time()
            midnight = (datetime.fromtimestamp(now, UTC) + timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            headers = {
                "X-Rate-Limit-Limit": str(config.quota),
                "X-Rate-Limit-Remaining": str(max(config.quota - self._quota_used, 0)),
                "X-Rate-Limit-Reset": str(int(midnight.timestamp())),
            }
            admission = Admission(company_id, headers, latency_s=config.latency_ms / 1000, stats=self._stats)
            if company_id is not None:
                self._inflight[company_id] += 1
                concurrent = self._inflight[company_id]
                self._stats.max_concurrency = max(self._stats.max_concurrency, concurrent)
                by_company = self._stats.max_concurrency_by_company
                by_company[company_id] = max(by_company[company_id], concurrent)
            if config.daily_quota_exhausted or self._quota_used > config.quota:
                admission.reject = self._rate_limited(
                    (midnight.timestamp() - now), "Daily request quota exhausted; it resets at 00:00 UTC."
                )
                admission.latency_s = 0
            elif self._take(config, "fail_429", target):
                admission.reject = self._rate_limited(config.retry_after_s, _RATE_LIMITED_MESSAGE)
            elif self._take(config, "fail_5xx", target):
                admission.reject = CodatHTTPError(
                    config.fail_5xx_status, "There is a problem with our server. Please try again later."
                )
            elif (
                company_id is not None
                and config.concurrency_limit is not None
                and self._inflight[company_id] > config.concurrency_limit
            ):
                self._stats.faults["concurrency_limit"] += 1
                admission.reject = self._rate_limited(1, _RATE_LIMITED_MESSAGE, seconds_only=True)
                admission.latency_s = 0
            elif not _authorized(authorization, config.api_key):
                admission.reject = CodatHTTPError(401, "Unauthorized")
            else:
                if self._take(config, "slow_response", target):
                    admission.slow_s = config.slow_response_s
                admission.drop_connection = self._take(config, "drop_connection", target)
                admission.truncate_body = not admission.drop_connection and self._take(config, "truncate_body", target)
            if admission.reject is not None:
                admission.headers.update(admission.reject.headers)
            return admission

    def finish(self, admission: Admission, method: str, path: str, query: str, status: int) -> None:
        """Account for an answered API request."""
        with self._lock:
            stats = self._stats
            if admission.stats is not None and admission.stats is not stats:
                return  # admitted before a reset: counted in neither the new statistics nor the limit
            if admission.company_id is not None:
                self._inflight[admission.company_id] -= 1
            stats.requests += 1
            stats.by_status[status] += 1
            stats.by_path[path][status] += 1
            if status == 429:
                stats.rate_limited += 1
            stats.log.append({"method": method, "path": path, "query": query, "status": status})

    def _take(self, config: FakeCodatConfig, fault: str, target: str) -> bool:
        """Whether a counted fault applies to this request; if so, count it down."""
        remaining = getattr(config, fault)
        if remaining <= 0:
            return False
        path_filter = getattr(config, f"{fault}_path")
        if path_filter and path_filter not in target:
            return False
        setattr(config, fault, remaining - 1)
        self._stats.faults[fault] += 1
        return True

    def _rate_limited(self, seconds: float, message: str, seconds_only: bool = False) -> CodatHTTPError:
        if self._config.retry_after_format == "http-date" and not seconds_only:
            # An HTTP-date has whole seconds: round up so the client never retries too early.
            when = datetime.fromtimestamp(time.time() + seconds + 1, UTC)
            retry_after = format_datetime(when, usegmt=True)
        else:
            retry_after = str(max(int(seconds + 0.999), 0))
        return CodatHTTPError(429, message, headers={"Retry-After": retry_after})

    def list_page(
        self,
        path: str,
        params: dict[str, str],
        company_id: str | None,
        target: str | tuple[str, str | None, str | None],
    ) -> bytes:
        """
        One page of a list endpoint, as bytes.

        :param path: the request path (for ``_links``).
        :param params: the query parameters.
        :param company_id: the company in the path (None for ``/companies``).
        :param target: ``"companies"``, ``"connections"``, or ``(data_type, connection_id,
            bank_account_id)`` for records.
        :raises CodatHTTPError: for unknown ids, unavailable data or bad parameters.
        """
        page, size = self._paging(params)
        query, order_by = params.get("query") or None, params.get("orderBy") or None
        with self._lock:
            data_type = None
            if target == "companies":
                table = self._dataset.company_table
            elif target == "connections":
                table = self._dataset.connection_table(self._company(company_id))
            else:
                data_type, connection_id, bank_account_id = target
                table = self._available_table(company_id, data_type, connection_id, bank_account_id)
            if query and self._config.dates_only and _TIMESTAMP_VALUE.search(query):
                raise CodatHTTPError(400, f"Invalid query '{query}': dates must be in the format yyyy-MM-dd.", "ClientsApi")
            try:
                selection = table.select(query, order_by)
            except QueryError as error:
                raise CodatHTTPError(400, str(error), "ClientsApi") from None
            start = (page - 1) * size
            chosen = selection[start : start + size]
            body = b"".join(
                (
                    b'{"results":[',
                    b",".join([table.bodies[position] for position in chosen]),
                    b"],",
                    encode(self._envelope(path, page, size, len(selection), query, order_by))[1:],
                )
            )
            self._stats.pages_served += 1
            self._stats.records_served += len(chosen)
            if data_type is not None:
                self._maybe_mutate(path, params, page, size, table, selection)
            return body

    def _envelope(
        self, path: str, page: int, size: int, total: int, query: str | None, order_by: str | None
    ) -> dict[str, Any]:
        def href(number: int) -> dict[str, str]:
            params = [("page", number), ("pageSize", size)]
            params += [(name, value) for name, value in (("query", query), ("orderBy", order_by)) if value]
            return {"href": f"{path}?{urlencode(params, quote_via=quote)}"}

        # As in Codat's examples: self is the bare path; current, next and previous carry paging.
        links = {"self": {"href": path}, "current": href(page)}
        if page > 1:
            links["previous"] = href(page - 1)
        if page * size < total:
            links["next"] = href(page + 1)
        return {"pageNumber": page, "pageSize": size, "totalResults": total, "_links": links}

    def _paging(self, params: dict[str, str]) -> tuple[int, int]:
        config = self._config
        try:
            page = int(params.get("page", "1"))
            size = int(params.get("pageSize", "100"))
        except ValueError:
            raise CodatHTTPError(400, "Page and pageSize must be whole numbers.") from None
        if page < 1:
            raise CodatHTTPError(400, "Page must be greater than or equal to 1.")
        if not 1 <= size <= config.max_page_size:
            raise CodatHTTPError(400, f"Page size must be between 1 and {config.max_page_size}.")
        if config.page_size_cap is not None:
            size = min(size, config.page_size_cap)
        return page, size

    def _maybe_mutate(
        self, path: str, params: dict[str, str], page: int, size: int, table: Table, selection: list[int]
    ) -> None:
        config = self._config
        if config.mutate_after_page != page or not table.modified:
            return
        target = f"{path}?{urlencode(params)}"
        if config.mutate_path and config.mutate_path not in target:
            return
        config.mutate_after_page = None
        # Records already served (pages 1..K) move out of any window ending before now, so every
        # later page of the same query starts further on: a client paging on skips records.
        positions = selection[: min(config.mutate_count, page * size)]
        epoch = max(int(time.time()), self._dataset.modified_to + 1)
        for position in positions:
            document = table.document(position)
            self._stamp(document, epoch)
            table.put(position, document, epoch)
        self._dataset.dirty = True
        self._stats.faults["mutate_after_page"] += 1
        self._stats.mutations.append(
            {"path": path, "page": page, "ids": [table.keys[p] for p in positions], "modifiedDate": utc_instant(epoch)}
        )

    def snapshot_body(self, company_id: str, data_type: DataType, params: dict[str, str]) -> bytes:
        """The body of a snapshot endpoint (company info, a financial report)."""
        with self._lock:
            company = self._company(company_id)
            self._check_available(company, data_type, None)
            report = self._dataset.snapshot(company, data_type, self._report_params(params, data_type))
            return encode(report)

    def _report_params(self, params: dict[str, str], data_type: DataType) -> dict[str, Any]:
        # The parameters Codat's spec marks required (the catalog's default_params: the reports' two).
        missing = [name for name, _ in data_type.default_params if not params.get(name)]
        if missing:
            raise CodatHTTPError(400, f"{' and '.join(missing)} must be given.")
        try:
            period_length = int(params.get("periodLength", "1"))
            periods = int(params.get("periodsToCompare", "1"))
        except ValueError:
            raise CodatHTTPError(400, "periodLength and periodsToCompare must be whole numbers.") from None
        if not 1 <= period_length <= 12 or not 1 <= periods <= 24:
            raise CodatHTTPError(400, "periodLength must be 1 to 12 and periodsToCompare 1 to 24.")
        start = params.get("startMonth")
        if start:
            try:
                month = parse_utc(start[:10] if len(start) >= 10 else f"{start[:7]}-01")
            except ValueError:
                raise CodatHTTPError(400, f"startMonth {start!r} is not a date.") from None
        else:
            month = datetime.fromtimestamp(self._dataset.modified_to - 1, UTC)
        return {"periodLength": period_length, "periodsToCompare": periods, "startMonth": (month.year, month.month)}

    def company_body(self, company_id: str) -> bytes:
        with self._lock:
            return self._dataset.company_table.bodies[self._company(company_id).index]

    def connection_body(self, company_id: str, connection_id: str) -> bytes:
        with self._lock:
            return encode(self._connection(self._company(company_id), connection_id).document)

    def data_status_body(self, company_id: str) -> bytes:
        """``GET /companies/{id}/dataStatus``."""
        with self._lock:
            company = self._company(company_id)
            now = time.time()
            synced = sync_keys(company)
            # Types set unsupported or queued on this company are listed too, even if never synced.
            keys = synced + sorted(
                {key for cid, key in self._unsupported | set(self._syncs) if cid == company.id} - set(synced)
            )
            synced_at = utc_instant(self._dataset.modified_to)
            statuses = {}
            for key in keys:
                entry: dict[str, Any] = {"dataType": key}
                initial = stable_uuid(self._config.seed, company.id, "sync", key)
                never_synced = self._never_synced(company, key, now)
                operation = self._syncs.get((company.id, key))
                if (company.id, key) in self._unsupported:
                    entry.update(currentStatus="NotSupported", latestSyncId=initial)
                elif operation is not None:
                    status = operation.status(now)
                    entry.update(currentStatus=status, latestSyncId=operation.id)
                    if status == "Complete":
                        entry.update(
                            lastSuccessfulSync=utc_instant(operation.completes), latestSuccessfulSyncId=operation.id
                        )
                    elif not never_synced:
                        entry.update(lastSuccessfulSync=synced_at, latestSuccessfulSyncId=initial)
                elif not never_synced:
                    entry.update(
                        currentStatus="Complete",
                        lastSuccessfulSync=synced_at,
                        latestSyncId=initial,
                        latestSuccessfulSyncId=initial,
                    )
                statuses[key] = entry
            return encode(statuses)

    def queue(self, company_id: str, keys: Sequence[str] | None) -> list[dict[str, Any]]:
        """
        Queue refreshes (``POST .../data/queue/{key}``, or every type with ``keys=None``).

        :return: the pull operations.
        """
        with self._lock:
            company = self._company(company_id)
            if keys is None:
                keys = sync_keys(company) or [dt.key for dt in DATA_TYPES.values() if dt.scope is Scope.COMPANY]
            now = time.time()
            operations = []
            for key in keys:
                dt = next((d for d in DATA_TYPES.values() if d.key == key), None)
                if dt is None:
                    raise CodatHTTPError(400, f"{key} is not a valid data type.")
                connection = next(
                    (c for c in company.connections if c.source_type == dt.source_type),
                    company.connections[0] if company.connections else None,
                )
                if (company.id, key) in self._unsupported:
                    outcome = "NotSupported"
                elif connection is None or not connection.has_data:
                    outcome = "AuthError"
                else:
                    outcome = "Complete"
                operation = SyncOperation(
                    id=str(uuid.uuid4()),
                    company_id=company.id,
                    connection_id=connection.id if connection else stable_uuid("no-connection"),
                    data_type=key,
                    requested=now,
                    completes=now + self._config.sync_delay_s,
                    outcome=outcome,
                )
                self._operations[operation.id] = operation
                self._syncs[(company.id, key)] = operation
                operations.append(operation.document(now))
            return operations

    def operation(self, company_id: str, operation_id: str) -> dict[str, Any]:
        """A pull operation (``GET .../data/history/{datasetId}``)."""
        with self._lock:
            company = self._company(company_id)
            operation = self._operations.get(operation_id)
            if operation is None or operation.company_id != company.id:
                raise CodatHTTPError(404, f"Dataset {operation_id} not found")
            return operation.document(time.time())

    # ----- lookups -----

    def _company(self, company_id: str | None) -> Company:
        company = self._dataset.by_id.get(company_id or "")
        if company is None:
            raise CodatHTTPError(404, f"No company was found with ID {company_id}", "ClientsApi")
        return company

    @staticmethod
    def _connection(company: Company, connection_id: str) -> Connection:
        connection = company.connection(connection_id)
        if connection is None:
            raise CodatHTTPError(404, f"Data connection {connection_id} not found")
        return connection

    @staticmethod
    def _incremental(name: str) -> DataType:
        dt = get_data_type(name)
        if not dt.incremental:
            raise ValueError(f"{dt.name} is a snapshot, not a list of records: use snapshot()")
        return dt

    def _never_synced(self, company: Company, key: str, now: float) -> bool:
        if (company.id, key) not in self._unsynced and company.has_data:
            return False
        operation = self._syncs.get((company.id, key))
        return operation is None or operation.status(now) != "Complete"

    def _check_available(self, company: Company, dt: DataType, connection: Connection | None) -> None:
        platforms = (
            [connection.platform_name]
            if connection
            else [c.platform_name for c in company.connections if c.source_type == dt.source_type]
        )
        unsupported = CodatHTTPError(404, f"Datatype {dt.key} not supported by platform(s) {', '.join(platforms)}")
        if connection is not None and connection.source_type != dt.source_type:
            raise unsupported
        if (company.id, dt.key) in self._unsupported:
            raise unsupported
        if connection is not None and (company.id, dt.key, connection.id) in self._unsupported_on:
            raise unsupported
        has_data = connection.has_data if connection is not None else company.has_data
        if not has_data or self._never_synced(company, dt.key, time.time()):
            raise CodatHTTPError(409, _UNSYNCED_MESSAGE)

    def _available_table(
        self, company_id: str | None, name: str, connection_id: str | None, bank_account_id: str | None
    ) -> Table:
        company = self._company(company_id)
        dt = DATA_TYPES[name]
        connection = self._connection(company, connection_id) if connection_id else None
        self._check_available(company, dt, connection)
        if bank_account_id is not None and bank_account_id not in self._dataset.bank_account_ids(company, connection):
            raise CodatHTTPError(404, f"Bank account {bank_account_id} not found")
        return self._dataset.record_set(company, dt, connection, bank_account_id)

    def _tables(
        self, company_id: str, dt: DataType, connection_id: str | None, bank_account_id: str | None
    ) -> list[Table]:
        company = self._company(company_id)
        if dt.scope is Scope.COMPANY:
            return [self._dataset.record_set(company, dt)]
        if connection_id:
            connections = [self._connection(company, connection_id)]
        else:
            connections = [c for c in company.connections if c.source_type == dt.source_type and c.has_data]
        tables = []
        for connection in connections:
            if dt.scope is Scope.CONNECTION:
                tables.append(self._dataset.record_set(company, dt, connection))
                continue
            accounts = [bank_account_id] if bank_account_id else self._dataset.bank_account_ids(company, connection)
            tables.extend(self._dataset.record_set(company, dt, connection, account) for account in accounts)
        return tables

    def _default_connection(self, company: Company, dt: DataType, connection_id: str | None) -> Connection | None:
        if dt.scope is Scope.COMPANY:
            return None
        if connection_id:
            return self._connection(company, connection_id)
        connection = next((c for c in company.connections if c.source_type == dt.source_type and c.has_data), None)
        if connection is None:
            raise ValueError(f"Company {company.id} has no {dt.source_type} connection with data")
        return connection

    def _default_account(
        self, company: Company, dt: DataType, connection: Connection | None, bank_account_id: str | None
    ) -> str | None:
        if dt.scope is not Scope.BANK_ACCOUNT:
            return None
        if bank_account_id:
            return bank_account_id
        accounts = self._dataset.bank_account_ids(company, connection)
        if not accounts:
            raise ValueError(f"Connection {connection.id} has no bank accounts")
        return accounts[0]

    def _single_table(
        self, company_id: str, dt: DataType, connection_id: str | None, bank_account_id: str | None
    ) -> Table:
        company = self._company(company_id)
        connection = self._default_connection(company, dt, connection_id)
        account = self._default_account(company, dt, connection, bank_account_id)
        return self._dataset.record_set(company, dt, connection, account)

    def _epoch(self, value: datetime | str | None) -> int:
        if value is None:
            return int(time.time())
        if isinstance(value, str):
            return int(parse_utc(value).timestamp())
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())

    @staticmethod
    def _stamp(document: dict[str, Any], epoch: int) -> None:
        document["modifiedDate"] = utc_instant(epoch)
        if "sourceModifiedDate" in document:
            document["sourceModifiedDate"] = local_instant(epoch - 60)


_TIMESTAMP_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}T\d")


def _authorized(header: str | None, api_key: str) -> bool:
    """Whether an Authorization header is ``Basic <base64(api_key)>``: the bare key, no colon."""
    if not header or not header[:6].lower() == "basic ":
        return False
    try:
        return base64.b64decode(header[6:].strip(), validate=True).decode() == api_key
    except (binascii.Error, UnicodeDecodeError):
        return False
