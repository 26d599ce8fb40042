"""Hook for the Codat REST API: auth, paging, retries and rate limits for every Codat data type."""

from __future__ import annotations

import base64
import email.utils
import functools
import gc
import ipaddress
import math
import mmap
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
import requests
import tenacity
from airflow.sdk import BaseHook

from airflow_provider_codat import __version__
from airflow_provider_codat.data_types import DataType, Scope, get_data_type
from airflow_provider_codat.exceptions import (
    CodatAPIError,
    CodatAuthError,
    CodatBadRequestError,
    CodatConnectionError,
    CodatDataNotSyncedError,
    CodatDataTypeNotSupportedError,
    CodatDataUnavailableError,
    CodatError,
    CodatInputError,
    CodatNoConnectionError,
    CodatNoDataError,
    CodatNotFoundError,
    CodatPagingError,
    CodatPlanLimitError,
    CodatRateLimitError,
    CodatServerError,
    CodatTLSError,
)
from airflow_provider_codat.query import Query, combine

DEFAULT_BASE_URL = "https://api.codat.io"
MAX_PAGE_SIZE = 5000
#: Codat allows 10 concurrent requests per company.
MAX_CONCURRENCY = 10

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_JSON = msgspec.json.Decoder()
#: Response bodies this large or larger are read into an anonymous memory map (see _read_body).
_MAPPED_BODY_MIN = 1024 * 1024
_MAPPED_BODY_CHUNK = 256 * 1024
#: Pages held beyond one per worker: the read-ahead window is ``concurrency + _HELD_PAGES`` pages,
#: each held as undecoded bytes. 2 or 8 more bought no speed in bench/ (README.md), only memory.
_HELD_PAGES = 0
#: Statuses worth another try: request timeout, rate limit, server errors.
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
#: Connections whose data Codat may still hold; PendingAuth ones were never linked and have none.
READABLE_CONNECTION_STATUSES = frozenset({"Linked", "Unlinked", "Deauthorized"})


@dataclass(frozen=True)
class CodatSettings:
    """
    Everything the hook needs from its connection, validated once.

    :param base_url: Codat's API root, without a trailing slash.
    :param page_size: records per request (1..5000).
    :param timeout: connect and read timeout of every request, in seconds.
    :param max_retries: attempts after the first for transient failures.
    :param max_retry_wait: the longest ``Retry-After`` to wait out; longer ones fail at once.
    :param retry_min_wait: the first backoff wait when Codat gives no ``Retry-After``.
    :param concurrency: pages fetched in parallel for one company (1..10).
    :param verify: TLS verification (``True``, ``False`` or a CA bundle path).
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    page_size: int = 2000
    timeout: float = 60.0
    max_retries: int = 8
    max_retry_wait: float = 120.0
    retry_min_wait: float = 0.5
    concurrency: int = 8
    verify: bool | str = True
    allow_insecure_http: bool = False


@dataclass
class Page:
    """
    One page of a list endpoint, as read.

    :param records: the page's records, exactly as Codat sent them.
    :param page_number: the 1-based page number.
    :param total_results: Codat's ``totalResults`` when this page was served.
    :param connection_id: the connection read, for connection-scoped data types.
    :param bank_account_id: the bank account read, for bank transactions.
    :param unavailable: set on an empty page standing for a connection that had none of the data
        (the error's ``reason``: ``not_supported``, ``not_synced``, ``no_data``) while the company's
        other connections were read.
    """

    records: list[dict]
    page_number: int
    total_results: int | None = None
    connection_id: str | None = None
    bank_account_id: str | None = None
    unavailable: str | None = None


class _CodatAuth(requests.auth.AuthBase):
    """Adds Codat's ``Authorization: Basic <base64(key)>`` header; its repr never shows the key."""

    def __init__(self, api_key: str):
        self._header = "Basic " + base64.b64encode(api_key.encode()).decode()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<CodatAuth ***>"


class CodatHook(BaseHook):
    """
    Interact with the Codat API: list companies and connections, read any data type completely.

    The connection's password is the Codat API key; its host optionally overrides the base URL
    (default ``https://api.codat.io``), e.g. for a proxy or a local fake. Extras (or keyword
    overrides) tune paging and retries: ``page_size``, ``timeout``, ``max_retries``,
    ``max_retry_wait``, ``concurrency``, ``allow_insecure_http``, ``verify``.

    Paged reads fetch page 1, learn ``totalResults``, then fetch the remaining pages concurrently
    (at most ``concurrency`` in flight, Codat's per-company limit is 10) while yielding records in
    page order. Memory is bounded by the pages in flight, not by the dataset.

    .. code-block:: python

        hook = CodatHook()
        for invoice in hook.iter_records(company_id, "invoices", query=window(start, end)):
            ...

    :param codat_conn_id: the Airflow connection holding the API key.
    :param overrides: settings that win over the connection's extras (see :class:`CodatSettings`).
    """

    conn_name_attr = "codat_conn_id"
    default_conn_name = "codat_default"
    conn_type = "codat"
    hook_name = "Codat"

    def __init__(self, codat_conn_id: str = default_conn_name, **overrides: Any) -> None:
        super().__init__()
        self.codat_conn_id = codat_conn_id
        unknown = set(overrides) - set(CodatSettings.__dataclass_fields__) - {"api_key"}
        if unknown:
            raise CodatInputError(
                f"Unknown CodatHook setting(s): {', '.join(sorted(unknown))}. "
                f"Known settings: {', '.join(f for f in CodatSettings.__dataclass_fields__ if f != 'api_key')}."
            )
        self._overrides = {k: v for k, v in overrides.items() if v is not None}
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "pages": 0, "records": 0}
        #: Codat's ``X-Rate-Limit-Remaining`` from the latest response.
        self.quota_remaining: str | None = None

    # -- connection and session ------------------------------------------------------------

    @cached_property
    def settings(self) -> CodatSettings:
        """The validated settings: connection first, then keyword overrides. No request is sent."""
        conn = self.get_connection(self.codat_conn_id)
        if conn.conn_type and conn.conn_type != self.conn_type:
            raise CodatInputError(
                f"Airflow connection {self.codat_conn_id!r} has type {conn.conn_type!r}, not 'codat'. "
                "Create a connection of type 'codat' with the API key as its password."
            )
        extra = conn.extra_dejson or {}
        raw: dict[str, Any] = {
            name: extra[name]
            for name in CodatSettings.__dataclass_fields__
            if name not in ("api_key", "base_url") and extra.get(name) not in (None, "")
        }
        raw["api_key"] = conn.password or ""
        if conn.host:
            raw["base_url"] = conn.host if "://" in conn.host else f"https://{conn.host}"
        raw.update(self._overrides)
        return _validate_settings(raw, self.codat_conn_id)

    @cached_property
    def session(self) -> requests.Session:
        """A pooled session sized for concurrent paging, with the Codat auth header."""
        settings = self.settings
        _mask_api_key(settings.api_key)
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(settings.concurrency * 2, 10), max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.auth = _CodatAuth(settings.api_key)
        session.verify = settings.verify
        session.headers.update({"Accept": "application/json", "User-Agent": f"airflow-provider-codat/{__version__}"})
        return session

    def get_conn(self) -> requests.Session:
        """Return the authenticated session (Airflow's hook protocol)."""
        return self.session

    # -- endpoints -------------------------------------------------------------------------

    def list_companies(self, query: Query | str | None = None) -> Iterator[dict]:
        """
        List every company, across all pages.

        :param query: an optional Codat query (a :class:`~airflow_provider_codat.query.Query` or text).
        :return: an iterator of company dicts.
        """
        for page in self._paginate("companies", query=combine(query), order_by="id"):
            yield from page.records

    def get_company(self, company_id: str) -> dict:
        """
        Get one company.

        :param company_id: the Codat company id.
        """
        return self._get_json(f"companies/{validate_id(company_id, 'company id')}")

    def list_connections(self, company_id: str, query: Query | str | None = None) -> Iterator[dict]:
        """
        List a company's connections (data connections), across all pages.

        :param company_id: the Codat company id.
        :param query: an optional Codat query, e.g. ``sourceType=Accounting``.
        :return: an iterator of connection dicts (``id``, ``sourceType``, ``platformName``, ``status``).
        """
        path = f"companies/{validate_id(company_id, 'company id')}/connections"
        for page in self._paginate(path, query=combine(query), order_by="id"):
            yield from page.records

    def get_data_status(self, company_id: str) -> dict[str, dict]:
        """
        Get the sync state of every data type of a company.

        :param company_id: the Codat company id.
        :return: a dict keyed by Codat data type key (``invoices``, ``chartOfAccounts``...); a type
            never synced may hold only ``dataType``.
        """
        return self._get_json(f"companies/{validate_id(company_id, 'company id')}/dataStatus")

    def queue_refresh(self, company_id: str, data_type: str | DataType) -> dict:
        """
        Ask Codat to refresh one data type of a company.

        :param company_id: the Codat company id.
        :param data_type: the data type name (``invoices``) or key (``chartOfAccounts``).
        :return: the pull operation Codat created.
        """
        dt = get_data_type(data_type)
        path = f"companies/{validate_id(company_id, 'company id')}/data/queue/{dt.key}"
        return self._request_json("POST", path)

    def get_snapshot(self, company_id: str, data_type: str | DataType, params: Mapping[str, Any] | None = None) -> dict:
        """
        Read a snapshot data type (company info or a financial report) as one document.

        :param company_id: the Codat company id.
        :param data_type: ``info``, ``balanceSheet``, ``profitAndLoss`` or ``cashFlowStatement``.
        :param params: report parameters such as ``periodLength``, ``periodsToCompare``, ``startMonth``;
            the two Codat requires default to the catalog's ``default_params`` (a year of months).
        """
        dt = get_data_type(data_type)
        if dt.incremental:
            raise CodatInputError(f"{dt.name!r} is a paged data type: read it with iter_records, not get_snapshot.")
        path = f"companies/{validate_id(company_id, 'company id')}/{dt.path}"
        return self._get_json(path, params={**dict(dt.default_params), **(params or {})})

    def iter_records(
        self,
        company_id: str,
        data_type: str | DataType,
        *,
        connection_id: str | None = None,
        query: Query | str | None = None,
        order_by: str | None = None,
    ) -> Iterator[dict]:
        """
        Read every record of one data type for one company, in page order.

        For connection-scoped types with no ``connection_id`` every connection of the right source
        type is read (Accounting, or Banking for ``banking-*``); ``bankTransactions`` walks the bank
        accounts of each connection. Snapshot types yield their one document.

        :param company_id: the Codat company id.
        :param data_type: Codat's URL segment name (``invoices``, ``bankAccounts``...).
        :param connection_id: read only this connection (connection-scoped types).
        :param query: a Codat query filter.
        :param order_by: Codat ``orderBy`` (``field`` or ``-field``); default: the primary key.
        :return: an iterator of record dicts, exactly as Codat sent them.
        """
        for page in self.iter_pages(company_id, data_type, connection_id=connection_id, query=query, order_by=order_by):
            yield from page.records

    def iter_pages(
        self,
        company_id: str,
        data_type: str | DataType,
        *,
        connection_id: str | None = None,
        query: Query | str | None = None,
        order_by: str | None = None,
    ) -> Iterator[Page]:
        """
        Like :meth:`iter_records`, one :class:`Page` at a time, telling which connection and bank
        account each page came from.
        """
        dt = get_data_type(data_type)
        company_id = validate_id(company_id, "company id")
        if connection_id is not None:
            connection_id = validate_id(connection_id, "connection id")
            if not dt.connection_scoped:
                raise CodatInputError(
                    f"{dt.name!r} is company-scoped: drop connection_id, or pick a connection-scoped data type."
                )
        query_text = combine(query)
        if not dt.incremental:
            if query_text:
                raise CodatInputError(f"{dt.name!r} is a snapshot: it cannot be filtered with a query.")
            yield Page(records=[self.get_snapshot(company_id, dt)], page_number=1, total_results=1)
            return
        order_by = order_by or dt.order_by
        id_field = dt.primary_key[0] if dt.primary_key else None
        read = functools.partial(self._paginate, query=query_text, order_by=order_by, id_field=id_field)
        if dt.scope is Scope.COMPANY:
            yield from read(f"companies/{company_id}/{dt.path}")
            return
        connection_ids = [connection_id] if connection_id else self._connection_ids(company_id, dt)
        unavailable: list[CodatDataUnavailableError] = []
        for conn_id in connection_ids:
            read_any = False
            try:
                for page in self._connection_pages(company_id, dt, conn_id, read):
                    read_any = True
                    yield page
            except CodatDataUnavailableError as err:
                # A company can hold several connections of one kind (an old platform unlinked, a new
                # one linked): one that lacks the data type must not throw away what the others hold.
                # Only when nothing was read from it yet, and never for a connection asked for by id.
                if read_any or connection_id or len(connection_ids) == 1:
                    raise
                self.log.warning(
                    "Connection %s of company %s has no %s (%s): reading the company's other connections.",
                    conn_id, company_id, dt.name, err.reason,
                )  # fmt: skip
                unavailable.append(err)
                yield Page(records=[], page_number=0, connection_id=conn_id, unavailable=err.reason)
        if unavailable and len(unavailable) == len(connection_ids):
            raise unavailable[-1]

    def _connection_pages(self, company_id: str, dt: DataType, conn_id: str, read) -> Iterator[Page]:
        base = f"companies/{company_id}/connections/{conn_id}"
        if dt.scope is Scope.CONNECTION:
            for page in read(f"{base}/{dt.path}"):
                page.connection_id = conn_id
                yield page
            return
        # Bank transactions live under each bank account of the connection.
        accounts = self._paginate(f"{base}/data/bankAccounts", query=None, order_by="id")
        for account_id in [a["id"] for p in accounts for a in p.records]:
            path = f"{base}/data/bankAccounts/{_path_segment(account_id, 'bank account id')}/{dt.path}"
            for page in read(path):
                page.connection_id, page.bank_account_id = conn_id, account_id
                yield page

    def test_connection(self) -> tuple[bool, str]:
        """Check the key and the host with one cheap call (one company), without retries."""
        try:
            body = self._request_once("GET", "companies", {"page": 1, "pageSize": 1})
        except CodatAuthError as err:
            return False, f"Codat rejected the API key: {err}"
        except CodatConnectionError as err:
            return False, f"Could not reach Codat: {err}"
        except CodatError as err:
            return False, str(err)
        total = body.get("totalResults") if isinstance(body, dict) else None
        return True, f"Connected to Codat at {self.settings.base_url}; the key sees {total} companies."

    # -- paging ----------------------------------------------------------------------------

    def _connection_ids(self, company_id: str, dt: DataType) -> list[str]:
        ids = [
            c["id"]
            for c in self.list_connections(company_id)
            if c.get("sourceType") == dt.source_type and c.get("status") in READABLE_CONNECTION_STATUSES
        ]
        if not ids:
            raise CodatNoConnectionError(
                f"Company {company_id} has no linked {dt.source_type} connection, so {dt.name} cannot be read. "
                f"Link a {dt.source_type} connection in Codat, or skip {dt.name} for this company.",
                path=f"companies/{company_id}/connections",
            )
        return ids

    def _paginate(
        self, path: str, *, query: str | None, order_by: str | None, id_field: str | None = "id"
    ) -> Iterator[Page]:
        """
        Yield every page of a list endpoint, in order.

        Page 1 tells ``totalResults``; pages 2..N are then fetched concurrently, at most
        ``concurrency`` in flight or held (as bytes, decoded only when their turn comes), and
        yielded strictly in order. Stop rules (Codat's beyond-the-end
        behaviour is unverified): a page with no ``next`` link, an empty page, or
        ``pageNumber * pageSize >= totalResults``, whichever comes first.

        The page-shift problem: page-number paging over a filtered set is only exact if the set
        does not change during the read. When a record leaves the window mid-read (it was modified,
        so its ``modifiedDate`` moved past the window end), every later record moves one position
        back and one record slides into an already-read page, unseen. We detect it (``totalResults``
        changing between pages, or fewer distinct records than ``totalResults``) and recover by
        re-reading the pages, yielding only records not seen before. Seen records are tracked as
        64-bit hashes in a compact array (8 bytes a record), so memory stays small.

        ``id_field`` names the field that identifies a record (``id``). Records without it (every account
        balance; Xero's bank transactions, per Codat's own example) cannot be told apart, so a read
        holding any cannot be repaired by re-reading: if its set moves, or the records read do not
        add up to ``totalResults``, the read fails and the task's retry reads again.
        """
        settings = self.settings
        params: dict[str, Any] = {"page": 1, "pageSize": settings.page_size}
        if query:
            params["query"] = query
        if order_by:
            params["orderBy"] = order_by
        seen = _SeenIds(id_field)
        # Even a read that ends at page 1 goes through the checks below: page 1 alone must add up
        # to totalResults too, or the read fails rather than stop short in silence.
        yield from map(seen.admit, self._read_every_page(path, params, id_field))
        if (seen.unkeyed or not id_field) and seen.shifted():
            raise CodatPagingError(
                f"Codat's results for {path} changed while being read (totalResults {seen.first_total} -> "
                f"{seen.last_total}, {seen.count} records read, {seen.unkeyed} of them without an id). Records "
                "without an id cannot be told apart, so the read cannot be repaired by re-reading without "
                "writing some twice: retry the task later."
            )
        for attempt in range(1, 4):
            if not seen.shifted():
                return
            self.log.warning(
                "Codat's result set for %s changed during the read (totalResults %s -> %s, %d distinct "
                "records read): re-reading to collect records that shifted between pages (pass %d).",
                path,
                seen.first_total,
                seen.last_total,
                seen.count,
                attempt,
            )
            before = seen.count
            seen.freeze()
            yield from map(seen.admit_new, self._read_every_page(path, params, id_field))
            if seen.count == before and not seen.totals_changed and seen.shifted():
                # Nothing moved and nothing new: Codat's count and its pages disagree for good.
                raise CodatPagingError(
                    f"Codat reported {seen.last_total} records for {path} but served {seen.count} distinct "
                    "ones, twice. Refusing to write an incomplete dataset; retry later or report it to Codat."
                )
        if seen.shifted():
            raise CodatPagingError(
                f"Codat's results for {path} kept changing while being read ({seen.count} distinct records, "
                f"totalResults now {seen.last_total}). The company is probably syncing: retry the task later."
            )

    def _read_every_page(self, path: str, params: dict, id_field: str | None) -> Iterator[_RawPage]:
        """One pass over a list endpoint: page 1, then the rest concurrently (one by one without totalResults)."""
        first = self._fetch_page(path, params, 1)
        page_size = _served_page_size(first, self.settings.page_size)
        more = _has_more(first, page_size)  # before the caller's seen-set trims page 1's records
        yield first
        if more and first.total_results is None:
            yield from self._sequential_pages(path, params, first, id_field)
        elif more:
            yield from self._concurrent_pages(path, params, 2, math.ceil(first.total_results / page_size))

    def _concurrent_pages(self, path: str, params: dict, first_page: int, last_page: int) -> Iterator[_RawPage]:
        concurrency = self.settings.concurrency
        if concurrency == 1 or last_page - first_page < 1:
            for number in range(first_page, last_page + 1):
                page = self._fetch_page(path, params, number)
                empty = not page.records
                yield page
                if empty:
                    return
            return
        window = concurrency + _HELD_PAGES
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="codat-page") as pool:
            pending: deque[Future[_RawPage]] = deque()
            next_number = first_page
            try:
                while pending or next_number <= last_page:
                    while next_number <= last_page and len(pending) < window:
                        pending.append(pool.submit(self._fetch_page, path, params, next_number, defer=True))
                        next_number += 1
                    page = self._materialize(pending.popleft().result(), path, params)
                    empty = not page.records
                    yield page
                    if empty:
                        return
            finally:
                for future in pending:
                    future.cancel()

    def _sequential_pages(self, path: str, params: dict, first: _RawPage, id_field: str | None) -> Iterator[_RawPage]:
        """Follow pages one by one when Codat gives no ``totalResults``; refuse a repeated page."""
        previous_ids = _ids_of(first.records, id_field)
        number = first.page_number
        while True:
            number += 1
            page = self._fetch_page(path, params, number)
            ids = _ids_of(page.records, id_field)
            if ids and ids == previous_ids:
                raise CodatPagingError(
                    f"Codat returned the same records for pages {number - 1} and {number} of {path}: "
                    "refusing to loop on a repeated page."
                )
            more = _has_more(page, page.envelope_page_size)
            yield page
            if not more:
                return
            previous_ids = ids

    def _fetch_page(self, path: str, params: dict, number: int, *, defer: bool = False) -> _RawPage:
        """
        Read one page. Only its envelope is decoded here; its records are decoded now, or, with
        ``defer`` (pool threads), by :meth:`_materialize` in the thread that consumes the page, so
        pages waiting in the read-ahead window are held as bytes (a quarter of their decoded size).
        """
        body = self._request_json("GET", path, params={**params, "page": number}, decode=_decode_envelope)
        raw = body.results if isinstance(body, _PageEnvelope) else None
        if raw is None or memoryview(raw)[:1] != b"[":
            raise CodatPagingError(f"Codat's answer for {path} page {number} has no 'results' list.")
        page = _RawPage(
            records=[],
            page_number=body.pageNumber or number,
            total_results=body.totalResults,
            envelope_page_size=body.pageSize,
            has_next="next" in (body.links or {}),
            requested_page=number,
            raw_results=raw,
        )
        if defer:
            return page
        page.raw_results = None
        page.records = _decode_records(raw)
        self._count_page(page, path)
        return page

    def _materialize(self, page: _RawPage, path: str, params: dict) -> _RawPage:
        """Decode the records of a page read with ``defer``, in the thread that consumes it."""
        raw = page.raw_results
        if raw is None:
            return page
        page.raw_results = None
        try:
            page.records = _decode_records(raw)
        except Exception:  # noqa: BLE001 - not expected: the envelope decode has checked the JSON
            # (it lets only invalid UTF-8 inside a string through). Read the page again the
            # ordinary way, which retries and reports exactly as a full decode always did.
            return self._fetch_page(path, params, page.requested_page)
        self._count_page(page, path)
        return page

    def _count_page(self, page: _RawPage, path: str) -> None:
        with self._stats_lock:
            self.stats["pages"] += 1
            self.stats["records"] += len(page.records)
        self.log.info(
            "Read /%s page %d: %d records of %s (quota remaining %s)",
            path,
            page.page_number,
            len(page.records),
            page.total_results,
            self.quota_remaining,
        )

    # -- requests and retries --------------------------------------------------------------

    def _get_json(self, path: str, params: dict | None = None) -> Any:
        return self._request_json("GET", path, params=params)

    def _request_json(
        self, method: str, path: str, params: dict | None = None, decode: Callable[[bytes], Any] = _JSON.decode
    ) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._is_retryable),
            stop=tenacity.stop_after_attempt(self.settings.max_retries + 1),
            wait=self._wait,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(self._request_once, method, path, params, decode)

    def _request_once(
        self, method: str, path: str, params: dict | None, decode: Callable[[bytes], Any] = _JSON.decode
    ) -> Any:
        settings = self.settings
        url = f"{settings.base_url}/{path}"
        with self._stats_lock:
            self.stats["requests"] += 1
        try:
            with self.session.request(
                method, url, params=params, timeout=settings.timeout, stream=True, verify=settings.verify
            ) as response:
                content = _read_body(response)
        except requests.exceptions.SSLError as err:
            raise CodatTLSError(
                f"TLS verification failed for {settings.base_url}: {_short(err)}. Fix the certificate, or "
                "point the connection's 'verify' extra at a CA bundle.",
            ) from None
        except requests.exceptions.Timeout:
            raise CodatConnectionError(
                f"Codat did not answer {method} /{path} within {settings.timeout:g}s (the 'timeout' setting)."
            ) from None
        except requests.exceptions.RequestException as err:
            raise CodatConnectionError(
                f"Could not reach Codat at {settings.base_url} ({method} /{path}): {_short(err)}."
            ) from None
        self.quota_remaining = response.headers.get("X-Rate-Limit-Remaining", self.quota_remaining)
        if response.status_code >= 400:
            raise self._error_for(response, path, params, content)
        if not content:
            return None
        try:
            return decode(content)
        except msgspec.DecodeError:
            # A body cut short in transit: transient, the retry policy tries again.
            raise CodatServerError(
                f"Codat's answer to {method} /{path} was not valid JSON ({len(content)} bytes, probably cut "
                "short in transit).",
                status_code=response.status_code,
                path=path,
            ) from None

    def _error_for(
        self, response: requests.Response, path: str, params: dict | None, content: bytes | mmap.mmap
    ) -> CodatAPIError:
        status = response.status_code
        try:
            body = _JSON.decode(content) if content else {}
        except msgspec.DecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        codat_message = str(body.get("error") or body.get("message") or response.reason or "").strip()
        correlation_id = body.get("correlationId") or response.headers.get("X-Correlation-Id")
        where = f"{response.request.method if response.request else 'GET'} /{path}"
        ref = f" (correlationId {correlation_id})" if correlation_id else ""
        kwargs = {
            "status_code": status,
            "path": path,
            "correlation_id": correlation_id,
            "codat_message": codat_message,
        }
        if correlation_id:
            self.log.warning(
                "Codat answered %s to %s: %s (correlationId %s)", status, where, codat_message, correlation_id
            )
        query = (params or {}).get("query")
        if status == 400:
            sent = f" The query sent was: {query}" if query else ""
            return CodatBadRequestError(
                f"Codat rejected {where} as a bad request: {codat_message}.{sent}{ref}", query=query, **kwargs
            )
        if status in (401, 403):
            return CodatAuthError(
                f"Codat refused the API key ({status}) for {where}: {codat_message}{ref}. Check the password "
                f"of Airflow connection {self.codat_conn_id!r}: it must be a current API key from the Codat "
                "Portal (Developers > API keys).",
                **kwargs,
            )
        if status == 402:
            return CodatPlanLimitError(f"Codat's plan limit stops {where}: {codat_message}{ref}", **kwargs)
        if status == 404:
            if "not supported" in codat_message.lower():
                return CodatDataTypeNotSupportedError(
                    f"The company's platform does not support this data type ({where}): {codat_message}{ref}",
                    **kwargs,
                )
            if codat_message.lower().startswith("no data available"):
                # Codat's documented 404 for a data type it holds nothing of for this company: a fact
                # about the company (skipped, with this reason), not a missing company or a bad path.
                return CodatNoDataError(
                    f"Codat has no data of this type for the company ({where}): {codat_message}{ref}", **kwargs
                )
            return CodatNotFoundError(f"Codat found nothing at {where}: {codat_message}{ref}", **kwargs)
        if status == 409:
            return CodatDataNotSyncedError(
                f"Codat has not synced this data set yet ({where}): {codat_message}{ref}. Queue a refresh or "
                "wait until dataStatus says Complete.",
                **kwargs,
            )
        if status == 429:
            return self._rate_limit_error(response, where, codat_message, ref, kwargs)
        if status in _RETRYABLE_STATUS or status >= 500:
            return CodatServerError(f"Codat answered {status} to {where}: {codat_message}{ref}", **kwargs)
        return CodatAPIError(f"Codat answered {status} to {where}: {codat_message}{ref}", **kwargs)

    def _rate_limit_error(self, response, where, codat_message, ref, kwargs) -> CodatRateLimitError:
        retry_after, retry_at = _parse_retry_after(response.headers.get("Retry-After"))
        cap = self.settings.max_retry_wait
        with self._stats_lock:
            self.stats["rate_limited"] += 1
        if retry_after is not None and retry_after > cap:
            reset = retry_at or datetime.now(UTC)
            return CodatRateLimitError(
                f"Codat's rate limit blocks {where} for {retry_after:.0f}s, longer than the {cap:g}s this "
                f"connection waits (max_retry_wait): the daily quota is probably spent. It resets at "
                f"{reset:%Y-%m-%d %H:%M:%S} UTC; rerun after that. {codat_message}{ref}".rstrip(),
                retry_after=retry_after,
                retry_at=retry_at,
                retryable=False,
                **kwargs,
            )
        return CodatRateLimitError(
            f"Codat rate-limited {where} (429) and the retries ran out: {codat_message}{ref}. Lower the "
            "concurrency or the number of parallel tasks (an Airflow pool).",
            retry_after=retry_after,
            retry_at=retry_at,
            **kwargs,
        )

    @staticmethod
    def _is_retryable(exc: BaseException) -> bool:
        """Retry transient failures only: timeouts, dropped connections, 408, 5xx, 429 within the cap."""
        if isinstance(exc, CodatRateLimitError):
            return exc.retryable
        return isinstance(exc, (CodatServerError, CodatConnectionError)) and not isinstance(exc, CodatTLSError)

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return max(0.0, retry_after)
        backoff = tenacity.wait_exponential_jitter(initial=self.settings.retry_min_wait, max=30)
        return backoff(retry_state)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        with self._stats_lock:
            self.stats["retries"] += 1
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        self.log.warning(
            "Retrying in %.1fs (attempt %d of %d): %s",
            retry_state.next_action.sleep if retry_state.next_action else 0,
            retry_state.attempt_number + 1,
            self.settings.max_retries + 1,
            exc,
        )


@dataclass
class _RawPage(Page):
    envelope_page_size: int | None = None
    has_next: bool = False
    #: The page number asked for (``page_number`` is the one Codat's envelope gives).
    requested_page: int = 0
    #: The undecoded ``results`` array, until :meth:`CodatHook._materialize` decodes it.
    raw_results: msgspec.Raw | None = None


class _PageEnvelope(msgspec.Struct, gc=False):
    """A list endpoint's paging envelope, its records left as raw JSON."""

    results: msgspec.Raw = None  # type: ignore[assignment] - None when absent
    pageNumber: Any = None  # noqa: N815 - Codat's field names
    pageSize: Any = None  # noqa: N815
    totalResults: Any = None  # noqa: N815
    links: Any = msgspec.field(default=None, name="_links")


_ENVELOPE = msgspec.json.Decoder(_PageEnvelope)


def _decode_envelope(content: bytes) -> Any:
    """
    Decode a page's envelope, checking that the whole body is valid JSON, but not its records.

    Valid JSON that is not an object is decoded as it is, for the caller's shape checks; invalid
    JSON raises ``msgspec.DecodeError`` as a full decode would, so a truncated body is retried.
    """
    try:
        return _ENVELOPE.decode(content)
    except msgspec.ValidationError:
        return _JSON.decode(content)


def _decode_records(raw: Any) -> Any:
    """
    Decode a page's records with the cyclic garbage collector paused.

    A page of 500 invoices is some 12,000 new dicts and lists at once, all alive: while they are
    built, the collector runs about 20 young-generation passes that free nothing, and the survivors
    soon force full passes over every object of the process (Airflow's included). Decoded JSON
    holds no reference cycles, so pausing the collector for the one C call loses nothing; it is
    re-enabled at once, and left alone if something else had disabled it.
    """
    if not gc.isenabled():
        return _JSON.decode(raw)
    gc.disable()
    try:
        return _JSON.decode(raw)
    finally:
        gc.enable()


class _SeenIds:
    """
    Tracks which records a read has yielded, to recover from the page-shift problem.

    While ``totalResults`` holds still, only repeats across neighbouring pages are dropped; ids are
    kept as 64-bit hashes in an ``array`` (8 bytes each, not a Python set). Once it moves (records
    added mid-read push later ones forward, possibly by many pages; records removed pull them
    back), the hashes are sorted once and every later record, and every record of a recovery pass,
    is checked against all records yielded so far.

    :param id_field: the field that identifies a record (``id``), or None for types with none.
    """

    def __init__(self, id_field: str | None = "id") -> None:
        from array import array

        self.id_field = id_field
        # Records without the key (every record of a type that has none; Xero's bank transactions,
        # which come without an id): all kept, only counted.
        self.unkeyed = 0

        self._hashes = array("q")
        self._recent: deque[set[int]] = deque(maxlen=2)
        self._frozen: list[int] | None = None
        self._new: set[int] = set()
        self.first_total: int | None = None
        self.last_total: int | None = None
        self.totals_changed = False

    @property
    def count(self) -> int:
        return len(self._hashes) + self.unkeyed

    def observe_total(self, page: _RawPage) -> None:
        if page.total_results is None:
            return
        if self.first_total is None:
            self.first_total = page.total_results
        elif page.total_results != self.last_total:
            self.totals_changed = True
        self.last_total = page.total_results

    def admit(self, page: _RawPage) -> Page:
        """First pass: keep every record except repeats."""
        self.observe_total(page)
        if not self.id_field:
            self.unkeyed += len(page.records)
            return page
        if self.totals_changed:
            # The set moved mid-read. Growth pushes later records forward by as many positions as
            # were added, possibly many pages: from here on, check every id against all yielded.
            return self._admit_checked(page, keep_unidentified=True)
        # The usual page: every record a dict with an id, none repeated. Checked with set
        # operations in C rather than record by record; anything else takes the loop below.
        try:
            field = self.id_field
            hashes = [hash(record[field]) for record in page.records]
        except (KeyError, TypeError, IndexError):
            hashes = None
        if hashes is not None and all(isinstance(record, dict) for record in page.records):
            recent = set(hashes)
            if len(recent) == len(hashes) and all(recent.isdisjoint(s) for s in self._recent):
                self._hashes.extend(hashes)
                self._recent.append(recent)
                return page
        recent: set[int] = set()
        kept = []
        for record in page.records:
            h = self._hash_of(record)
            if h is None:
                self.unkeyed += 1
            else:
                if any(h in s for s in self._recent) or h in recent:
                    continue
                recent.add(h)
                self._hashes.append(h)
            kept.append(record)
        self._recent.append(recent)
        page.records = kept
        return page

    def freeze(self) -> None:
        self._frozen = sorted(self._hashes)
        self._new = set()
        self.totals_changed = False
        self.first_total = self.last_total

    def admit_new(self, page: _RawPage) -> Page:
        """Recovery pass: keep only records never yielded before (records without an id cannot tell)."""
        self.observe_total(page)
        return self._admit_checked(page, keep_unidentified=False)

    def _admit_checked(self, page: _RawPage, *, keep_unidentified: bool) -> Page:
        import bisect

        if self._frozen is None:
            # Sorted once, only once the set has moved: the common read never pays for it.
            self._frozen = sorted(self._hashes)
            self._new = set()
        frozen = self._frozen
        kept = []
        for record in page.records:
            h = self._hash_of(record)
            if h is None:
                if keep_unidentified:
                    self.unkeyed += 1
                    kept.append(record)
                continue
            i = bisect.bisect_left(frozen, h)
            if (i < len(frozen) and frozen[i] == h) or h in self._new:
                continue
            self._new.add(h)
            self._hashes.append(h)
            kept.append(record)
        page.records = kept
        return page

    def _hash_of(self, record: Any) -> int | None:
        """The hash of a record's id; ``None`` if it is not a dict holding one."""
        if not isinstance(record, dict) or self.id_field not in record:
            return None
        try:
            return hash(record[self.id_field])
        except TypeError:  # an unhashable value (a list or an object) cannot identify a record
            return None

    def shifted(self) -> bool:
        """Whether the set moved during the read in a way that may have hidden records."""
        if self.last_total is None:
            return False
        if self.unkeyed or not self.id_field:  # nothing to deduplicate on: any difference is a gap or a repeat
            return self.totals_changed or self.count != self.last_total
        return self.totals_changed or self.count < self.last_total


def _read_body(response: requests.Response) -> bytes | mmap.mmap:
    """
    A response's body, read through requests (so read errors map as they do for ``.content``).

    requests' own ``.content`` reads 10 KiB at a time, a Python-level call chain per chunk. Small
    bodies are read in one piece instead. Large ones (a page of records) are read into an anonymous
    memory map, outside the heap: page readers are pool threads, and glibc gives each thread its own
    malloc arena, which keeps a multi-megabyte body's memory after it is freed (its trim threshold
    follows the largest block freed). Eight readers kept ~65 MB that way at 2,000-record pages; a
    map is returned to the system as soon as the page it holds is decoded. msgspec decodes a map in
    place, and its ``Raw`` slices keep the map alive until then.
    """
    length = response.headers.get("Content-Length", "")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if not length.isdigit() or int(length) < _MAPPED_BODY_MIN or encoding not in ("", "identity"):
        return b"".join(response.iter_content(None))
    body = mmap.mmap(-1, int(length))
    for chunk in response.iter_content(_MAPPED_BODY_CHUNK):
        if len(chunk) > len(body) - body.tell():
            raise requests.exceptions.ContentDecodingError("The body is longer than its Content-Length.")
        body.write(chunk)
    if body.tell() < len(body):  # urllib3 raises on a short body first; this is a second guard
        return body[: body.tell()]
    return body


def _served_page_size(first: _RawPage, requested: int) -> int:
    """
    The page size Codat really serves, judged from page 1.

    The envelope's ``pageSize``, unless page 1 came back shorter than that while more records exist.
    Codat's spec allows 5000 per request but 2000 in the response (unverified which holds): a server
    that caps pages yet echoes the size asked for would otherwise make page 1 look like the last.
    """
    size = first.envelope_page_size or requested
    served = len(first.records)
    if first.total_results is not None and 0 < served < min(size, first.total_results):
        return served
    return size


def _has_more(page: _RawPage, page_size: int | None) -> bool:
    """Codat's stop rules: no ``next`` link, an empty page, or ``pageNumber * pageSize >= totalResults``."""
    if not page.records or not page.has_next:
        return False
    if page.total_results is not None and page_size:
        return page.page_number * page_size < page.total_results
    return True


def _ids_of(records: list, id_field: str | None) -> list:
    """What tells the records apart: their ids, or the records themselves when they have none."""
    if not id_field:
        return records
    return [r.get(id_field) if isinstance(r, dict) else r for r in records]


def _parse_retry_after(value: str | None) -> tuple[float | None, datetime | None]:
    """Codat's ``Retry-After`` may be seconds or an HTTP date (unverified which): accept both."""
    if not value:
        return None, None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None, None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds()), when
    seconds = max(0.0, seconds)
    return seconds, datetime.fromtimestamp(time.time() + seconds, tz=UTC)


def _short(err: BaseException) -> str:
    """A one-line reason from a requests exception, without the nested urllib3 repr noise."""
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] ([^')\"]+)", text) or re.search(r"(Connection refused|Read timed out)", text)
    reason = match.group(1) if match else text.split(":", 1)[0]
    return f"{type(err).__name__}: {reason.strip()}"


def _mask_api_key(api_key: str) -> None:
    """Register the key and its base64 form with Airflow's secrets masker (no-op outside tasks)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the SDK always has it on Airflow 3
        return
    mask_secret(api_key)
    mask_secret(base64.b64encode(api_key.encode()).decode())


def validate_id(value: Any, what: str) -> str:
    """
    Check a Codat id (companies, connections and bank accounts use UUIDs) before it goes in a URL.

    :param value: the id to check.
    :param what: what the id is, for the message ("company id").
    :return: the id, stripped of surrounding whitespace.
    """
    text = str(value).strip() if value is not None else ""
    if not text:
        raise CodatInputError(
            f"The {what} is empty: pass the Codat {what} (a UUID such as 8a210b68-6988-11ed-a1eb-0242ac120002)."
        )
    if not _UUID.match(text):
        raise CodatInputError(
            f"The {what} {text!r} is not a Codat id: expected a UUID such as 8a210b68-6988-11ed-a1eb-0242ac120002. "
            "Copy it from the Codat Portal or from CodatHook.list_companies()."
        )
    return text


def _path_segment(value: Any, what: str) -> str:
    """
    A platform's id (a bank account's), percent-encoded as one URL path segment.

    Unlike company and connection ids, these are whatever the accounting platform uses: UUIDs in
    Xero, short numbers in QuickBooks Online. Encoding keeps an id with ``/`` or ``?`` from
    changing the URL.
    """
    text = str(value) if value is not None else ""
    if not text.strip():
        raise CodatAPIError(f"Codat returned a {what} that is empty ({value!r}): cannot read the records below it.")
    return quote(text, safe="")


def _validate_settings(raw: dict[str, Any], conn_id: str) -> CodatSettings:
    api_key = str(raw.get("api_key") or "").strip()
    if not api_key:
        raise CodatInputError(
            f"Airflow connection {conn_id!r} has no Codat API key: set its password to a key from the Codat "
            "Portal (Developers > API keys)."
        )
    values: dict[str, Any] = {"api_key": api_key}
    for name, kind, low, high in (
        ("page_size", int, 1, MAX_PAGE_SIZE),
        ("timeout", float, 1, 3600),
        ("max_retries", int, 0, 20),
        ("max_retry_wait", float, 0, 86400),
        ("retry_min_wait", float, 0, 60),
        ("concurrency", int, 1, MAX_CONCURRENCY),
    ):
        if name not in raw:
            continue
        try:
            number = kind(raw[name])
            if kind is int and number != float(raw[name]):
                raise ValueError
        except (TypeError, ValueError):
            raise CodatInputError(f"Codat setting {name}={raw[name]!r} is not a number.") from None
        if not low <= number <= high:
            why = " (Codat allows 10 concurrent requests per company)" if name == "concurrency" else ""
            raise CodatInputError(f"Codat setting {name}={raw[name]!r} is out of range: use {low}..{high}{why}.")
        values[name] = number
    for name in ("allow_insecure_http",):
        if name in raw:
            values[name] = _to_bool(raw[name], name)
    if "verify" in raw:
        verify = raw["verify"]
        values["verify"] = (
            verify
            if isinstance(verify, str) and verify.lower() not in ("true", "false")
            else _to_bool(verify, "verify")
        )
    values["base_url"] = _validate_base_url(
        str(raw.get("base_url") or DEFAULT_BASE_URL), values.get("allow_insecure_http", False)
    )
    return CodatSettings(**values)


def _validate_base_url(url: str, allow_insecure_http: bool) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CodatInputError(
            f"Codat base URL {url!r} is not an http(s) URL: leave the connection's host empty for "
            f"{DEFAULT_BASE_URL}, or give a full URL such as https://proxy.example.com."
        )
    if parts.query or parts.fragment:
        raise CodatInputError(f"Codat base URL {url!r} must not carry a query string or fragment.")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise CodatInputError(
            f"Codat base URL {url!r} uses plain http to a remote host, which would send the API key "
            "unencrypted. Use https, or set the connection extra allow_insecure_http=true for a trusted proxy."
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise CodatInputError(f"Codat setting {name}={value!r} is not a boolean: use true or false.")
