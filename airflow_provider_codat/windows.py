"""Extraction windows: what one run reads from Codat, and how that window names its S3 folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow_provider_codat.data_types import DataType
from airflow_provider_codat.exceptions import CodatInputError

#: A window may end this far past "now" (clock skew between workers) before it is refused.
FUTURE_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True)
class Window:
    """
    What one run reads: the nominal window that names the S3 folder, and what is queried.

    :param kind: ``incremental``, ``full_refresh`` or ``snapshot``.
    :param start: the nominal window start (``None`` for full refreshes and snapshots).
    :param end: the nominal window end, exclusive; for full refreshes and snapshots the "as of" time.
    :param query_start: ``start`` widened by the lookback: what the Codat query filters on.
    """

    kind: str
    start: datetime | None
    end: datetime
    query_start: datetime | None = None

    def partition(self) -> str:
        """The S3 folder of this window, below ``{prefix}/{data_type}/company_id={id}/``."""
        if self.kind == "incremental":
            return f"window_start={key_time(self.start)}/window_end={key_time(self.end)}"
        return f"{self.kind}/as_of={key_time(self.end)}"

    def whole_days(self) -> tuple[date | None, date]:
        """The smallest span of whole UTC days covering ``[query_start, end)``."""
        start = self.query_start.date() if self.query_start else None
        end = self.end.date()
        if self.end != datetime(end.year, end.month, end.day, tzinfo=UTC):
            end += timedelta(days=1)
        return start, end

    def contains(self, value: Any) -> bool:
        """Whether a record's cursor value (``modifiedDate`` text) falls in ``[query_start, end)``."""
        when = to_utc_datetime(value, "modifiedDate")
        if when is None:
            return False
        return (self.query_start is None or when >= self.query_start) and when < self.end

    def as_dict(self) -> dict[str, Any]:
        """The window as JSON-ready text, for manifests and XComs."""
        return {"kind": self.kind, "start": iso(self.start), "end": iso(self.end), "query_start": iso(self.query_start)}


def resolve_window(
    data_type: DataType,
    *,
    window_start: Any = None,
    window_end: Any = None,
    data_interval_start: Any = None,
    data_interval_end: Any = None,
    run_moment: datetime,
    lookback: timedelta = timedelta(0),
    full_refresh: bool = False,
    now: datetime | None = None,
) -> Window:
    """
    Decide what a run reads.

    - Incremental types read ``[start - lookback, end)`` on ``modifiedDate``: the explicit window if
      given, else the run's data interval.
    - A run with no data interval (Airflow 3 gives a manual run ``logical_date=None``) and no explicit
      window reads everything up to ``run_moment``, the moment the run was triggered: the sensible
      answer to "extract now" from the UI, never an error or an empty window. It lands as a full refresh.
    - An explicit start with no end reads up to ``run_moment``.
    - ``full_refresh`` reads everything, as of the window end (or ``run_moment``).
    - Snapshot types (company info, reports) take no window; each run is keyed by its end or ``run_moment``.

    :raises CodatInputError: for an end not after the start (with a hint for Airflow 3's zero-width
        cron intervals), an end in the future, a window asked of a snapshot type, or unparseable times.
    """
    start = to_utc_datetime(window_start, "window_start")
    end = to_utc_datetime(window_end, "window_end")
    if start is None and end is None and not full_refresh:
        start = to_utc_datetime(data_interval_start, "data_interval_start")
        end = to_utc_datetime(data_interval_end, "data_interval_end")
    if not data_type.incremental:
        if window_start is not None:
            raise CodatInputError(
                f"{data_type.name!r} is a snapshot (not incremental): it has no modifiedDate to window on. "
                "Drop window_start/window_end for it; each run stores the current snapshot."
            )
        return Window("snapshot", None, end or run_moment)
    if full_refresh or start is None:
        return Window("full_refresh", None, end or run_moment)
    end = end or run_moment
    if end <= start:
        hint = ""
        if end == start:
            hint = (
                " A zero-width window usually means the DAG's schedule is a cron string or '@daily', which in "
                "Airflow 3 gives start == end: use CronDataIntervalTimetable for real data intervals."
            )
        raise CodatInputError(f"window_end {iso(end)} is not after window_start {iso(start)}.{hint}")
    if end > (now or datetime.now(UTC)) + FUTURE_TOLERANCE:
        raise CodatInputError(
            f"window_end {iso(end)} is in the future: records changed after this run but before then would "
            "belong to this window and never be read. End windows at or before now."
        )
    return Window("incremental", start, end, query_start=start - lookback)


def to_utc_datetime(value: Any, name: str) -> datetime | None:
    """
    Read a datetime, a date-like ISO 8601 text, or nothing, as an aware UTC datetime.

    :param value: the value; naive datetimes and texts without an offset are taken as UTC.
    :param name: the parameter name, for the error message.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise CodatInputError(
                f"{name}={value!r} is not a date or datetime: use ISO 8601, e.g. 2024-03-04T00:00:00Z."
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    utc = parsed.astimezone(UTC)
    # A plain datetime, not a subclass: pendulum's DateTime (Airflow's context dates) loses its
    # timezone on arithmetic once converted to datetime.timezone.utc.
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)


def key_time(value: datetime | None) -> str:
    """A compact UTC time for S3 keys (``20240304T000000Z``): no colons, sorts as text."""
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if value else "none"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC text with a ``Z``, or None."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
