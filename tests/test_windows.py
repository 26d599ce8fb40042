"""Window resolution: data intervals, manual runs, lookback, snapshots, bad windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from airflow_provider_codat.data_types import DATA_TYPES
from airflow_provider_codat.exceptions import CodatInputError
from airflow_provider_codat.windows import Window, iso, key_time, resolve_window, to_utc_datetime

INVOICES = DATA_TYPES["invoices"]
RUN = datetime(2024, 3, 5, 6, 30, tzinfo=UTC)
NOW = datetime(2024, 3, 6, tzinfo=UTC)


def resolve(data_type=INVOICES, **kwargs):
    return resolve_window(data_type, run_moment=RUN, now=NOW, **kwargs)


def test_data_interval_with_lookback():
    win = resolve(
        data_interval_start=datetime(2024, 3, 4, tzinfo=UTC),
        data_interval_end=datetime(2024, 3, 5, tzinfo=UTC),
        lookback=timedelta(hours=2),
    )
    assert win == Window(
        "incremental",
        datetime(2024, 3, 4, tzinfo=UTC),
        datetime(2024, 3, 5, tzinfo=UTC),
        query_start=datetime(2024, 3, 3, 22, tzinfo=UTC),
    )
    assert win.partition() == "window_start=20240304T000000Z/window_end=20240305T000000Z"
    assert win.as_dict() == {
        "kind": "incremental",
        "start": "2024-03-04T00:00:00Z",
        "end": "2024-03-05T00:00:00Z",
        "query_start": "2024-03-03T22:00:00Z",
    }


def test_explicit_window_wins_over_interval_and_accepts_text():
    win = resolve(
        window_start="2024-02-01",
        window_end="2024-02-02T12:00:00+01:00",
        data_interval_start=datetime(2024, 3, 4, tzinfo=UTC),
        data_interval_end=datetime(2024, 3, 5, tzinfo=UTC),
    )
    assert (win.start, win.end) == (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 2, 11, tzinfo=UTC))


def test_manual_run_without_interval_reads_everything_up_to_the_trigger():
    win = resolve()
    assert win == Window("full_refresh", None, RUN)
    assert win.partition() == "full_refresh/as_of=20240305T063000Z"


def test_start_without_end_reads_up_to_the_run():
    assert resolve(window_start="2024-03-01").end == RUN


def test_full_refresh_ignores_interval():
    win = resolve(full_refresh=True, data_interval_start=RUN - timedelta(days=1), data_interval_end=RUN)
    assert win == Window("full_refresh", None, RUN)


def test_snapshot_keyed_by_interval_end_or_run():
    info = DATA_TYPES["info"]
    assert resolve(info) == Window("snapshot", None, RUN)
    win = resolve(info, data_interval_start=RUN - timedelta(days=1), data_interval_end=RUN - timedelta(hours=6))
    assert win.partition() == "snapshot/as_of=20240305T003000Z"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"window_start": "2024-03-04", "window_end": "2024-03-04"},
            "window_end 2024-03-04T00:00:00Z is not after window_start 2024-03-04T00:00:00Z. A zero-width window "
            "usually means the DAG's schedule is a cron string or '@daily', which in Airflow 3 gives start == "
            "end: use CronDataIntervalTimetable for real data intervals.",
        ),
        (
            {"window_start": "2024-03-04", "window_end": "2024-03-03"},
            "window_end 2024-03-03T00:00:00Z is not after window_start 2024-03-04T00:00:00Z.",
        ),
        (
            {"window_start": "2024-03-04", "window_end": "2024-04-01"},
            "window_end 2024-04-01T00:00:00Z is in the future: records changed after this run but before then "
            "would belong to this window and never be read. End windows at or before now.",
        ),
        (
            {"window_start": "yesterday"},
            "window_start='yesterday' is not a date or datetime: use ISO 8601, e.g. 2024-03-04T00:00:00Z.",
        ),
    ],
)
def test_bad_windows(kwargs, message):
    with pytest.raises(CodatInputError) as err:
        resolve(**kwargs)
    assert str(err.value) == message


def test_snapshot_refuses_a_window():
    with pytest.raises(CodatInputError) as err:
        resolve(DATA_TYPES["balanceSheet"], window_start="2024-03-01", window_end="2024-03-02")
    assert str(err.value) == (
        "'balanceSheet' is a snapshot (not incremental): it has no modifiedDate to window on. Drop "
        "window_start/window_end for it; each run stores the current snapshot."
    )


def test_time_helpers():
    assert to_utc_datetime(datetime(2024, 1, 1), "x") == datetime(2024, 1, 1, tzinfo=UTC)
    assert to_utc_datetime(str(date(2024, 1, 1)), "x") == datetime(2024, 1, 1, tzinfo=UTC)
    assert to_utc_datetime("2024-01-01T00:00:00Z", "x") == datetime(2024, 1, 1, tzinfo=UTC)
    assert to_utc_datetime(None, "x") is None
    assert key_time(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "20240102T030405Z"
    assert iso(None) is None


def test_pendulum_dates_from_the_airflow_context_stay_aware_through_lookback():
    import pendulum

    win = resolve(
        data_interval_start=pendulum.datetime(2024, 3, 1, 1),
        data_interval_end=pendulum.datetime(2024, 3, 2, 1),
        lookback=timedelta(hours=1),
    )
    assert type(win.query_start) is datetime
    assert win.query_start == datetime(2024, 3, 1, 0, tzinfo=UTC)


def test_whole_days_cover_the_query_window():
    win = Window(
        "incremental",
        datetime(2024, 2, 1, 6, tzinfo=UTC),
        datetime(2024, 2, 3, 18, tzinfo=UTC),
        datetime(2024, 2, 1, 5, tzinfo=UTC),
    )
    assert win.whole_days() == (date(2024, 2, 1), date(2024, 2, 4))
    midnight = Window(
        "incremental",
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 2, 3, tzinfo=UTC),
        datetime(2024, 2, 1, tzinfo=UTC),
    )
    assert midnight.whole_days() == (date(2024, 2, 1), date(2024, 2, 3))


@pytest.mark.parametrize(
    ("value", "inside"),
    [
        ("2024-02-01T05:00:00Z", True),
        ("2024-02-01T04:59:59.999Z", False),
        ("2024-02-03T17:59:59.5Z", True),
        ("2024-02-03T18:00:00Z", False),
        (None, False),
    ],
)
def test_contains_is_half_open_on_the_query_window(value, inside):
    win = Window(
        "incremental",
        datetime(2024, 2, 1, 6, tzinfo=UTC),
        datetime(2024, 2, 3, 18, tzinfo=UTC),
        datetime(2024, 2, 1, 5, tzinfo=UTC),
    )
    assert win.contains(value) is inside
