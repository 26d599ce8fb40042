"""CodatDataStatusSensor against the fake Codat API over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from airflow_provider_codat.exceptions import CodatError
from airflow_provider_codat.sensors.codat import CodatDataStatusSensor

pytestmark = pytest.mark.integration


def sensor(company_id, data_types, synced_after=None):
    return CodatDataStatusSensor(
        task_id="wait", company_id=company_id, data_types=data_types, synced_after=synced_after
    )


@pytest.mark.fake_codat(companies=2, sync_delay_s=3)  # long enough to poke before it completes, even under load
def test_waits_for_a_sync_after_the_request(fake_codat, codat_conn_env):
    from airflow_provider_codat.hooks.codat import CodatHook

    company = fake_codat.company_ids()[0]
    asked_at = datetime.now(UTC).replace(microsecond=0)
    wait = sensor(company, ["invoices", "accounts"], synced_after=asked_at.isoformat())
    assert wait.poke({}) is False  # the last sync predates the request
    hook = CodatHook()
    hook.queue_refresh(company, "invoices")
    hook.queue_refresh(company, "chartOfAccounts")
    assert wait.poke({}) is False  # queued, not complete yet
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while not wait.poke({}):
        assert datetime.now(UTC) < deadline, "the fake's sync never completed"


@pytest.mark.fake_codat(companies=2)
def test_complete_without_synced_after(fake_codat, codat_conn_env):
    assert sensor(fake_codat.company_ids()[0], "invoices").poke({}) is True


@pytest.mark.fake_codat(companies=2)
def test_never_synced_type_keeps_waiting(fake_codat, codat_conn_env):
    company = fake_codat.company_ids()[0]
    fake_codat.set_unsynced(company, "bills")
    assert sensor(company, ["bills"]).poke({}) is False


def test_failed_sync_fails_the_task(requests_mock, monkeypatch):
    import json

    company = "8a210b68-6988-11ed-a1eb-0242ac120002"
    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({"conn_type": "codat", "password": "k"}))
    requests_mock.get(
        f"https://api.codat.io/companies/{company}/dataStatus",
        json={"invoices": {"dataType": "invoices", "currentStatus": "FetchError"}},
    )
    with pytest.raises(CodatError) as err:
        sensor(company, ["invoices"]).poke({})
    assert str(err.value) == (
        f"Codat's sync of invoices for company {company} ended in FetchError: see the pull operation in Codat for "
        "why, fix the connection, then queue a new refresh."
    )


# Every ``currentStatus`` of Codat's dataStatus (Codat-Platform.yaml, ``PullOperation.status``), in the spec's order.
SPEC_STATUSES = [
    "Initial", "Queued", "Fetching", "MapQueued", "Mapping", "Complete", "FetchError", "MapError", "InternalError",
    "ProcessingQueued", "Processing", "ProcessingError", "ValidationQueued", "Validating", "ValidationError",
    "AuthError", "Cancelled", "NotSupported", "RateLimitError", "PermissionsError", "PrerequisiteNotMet",
]  # fmt: skip
IN_PROGRESS = [
    "Initial", "Queued", "Fetching", "MapQueued", "Mapping", "ProcessingQueued", "Processing", "ValidationQueued",
    "Validating",
]  # fmt: skip
GENERIC_ADVICE = "see the pull operation in Codat for why, fix the connection, then queue a new refresh."
#: Each failed status and the advice its message ends with.
TERMINAL = {
    "FetchError": GENERIC_ADVICE,
    "MapError": GENERIC_ADVICE,
    "InternalError": GENERIC_ADVICE,
    "ProcessingError": GENERIC_ADVICE,
    "ValidationError": GENERIC_ADVICE,
    "AuthError": "re-link the company's connection in Codat (its credentials no longer work), then queue a new refresh.",
    "Cancelled": "the sync was cancelled: queue a new refresh.",
    "RateLimitError": "the source platform rate-limited Codat: queue a new refresh later.",
    "PermissionsError": (
        "grant Codat access to this data in the source platform (or re-link the connection with the needed "
        "permissions), then queue a new refresh."
    ),
    "PrerequisiteNotMet": (
        "Codat needs something else first (often another data type synced, or a setting on the connection): "
        "see the pull operation in Codat, fix it, then queue a new refresh."
    ),
}
COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"
SYNC_ID = "ad474a37-2003-478e-baee-9af9f1ec2fe3"
ASKED_AT = "2024-03-05T10:00:00Z"


@pytest.fixture
def data_status(requests_mock, monkeypatch):
    """``data_status(entries)``: Codat's dataStatus for COMPANY answers ``entries`` (key -> entry)."""
    import json

    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({"conn_type": "codat", "password": "k"}))

    def answer(entries):
        body = {key: {"dataType": key, **entry} for key, entry in entries.items()}
        requests_mock.get(f"https://api.codat.io/companies/{COMPANY}/dataStatus", json=body)

    return answer


def test_the_tables_cover_every_status_of_the_spec():
    from airflow_provider_codat.sensors.codat import COMPLETE_STATUS, IN_PROGRESS_STATUSES, NOT_SUPPORTED_STATUS

    assert len(SPEC_STATUSES) == len(set(SPEC_STATUSES)) == 21
    assert sorted([*IN_PROGRESS, "Complete", "NotSupported", *TERMINAL]) == sorted(SPEC_STATUSES)
    assert IN_PROGRESS_STATUSES == frozenset(IN_PROGRESS)
    assert (COMPLETE_STATUS, NOT_SUPPORTED_STATUS) == ("Complete", "NotSupported")


@pytest.mark.parametrize("status", IN_PROGRESS)
def test_in_progress_status_keeps_waiting(data_status, status):
    # A previous sync finished after ASKED_AT: the sync under way still decides.
    data_status({"invoices": {"currentStatus": status, "lastSuccessfulSync": "2024-03-05T11:00:00Z"}})
    with capture_logs() as logs:
        assert sensor(COMPANY, ["invoices"], synced_after=ASKED_AT).poke({}) is False
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("info", f"Waiting for Codat to sync company {COMPANY}: invoices={status}")
    ]


@pytest.mark.parametrize(
    ("last_sync", "synced_after", "ready"),
    [
        ("2024-03-05T10:00:00Z", ASKED_AT, True),  # at the request counts
        ("2024-03-05T10:00:01Z", ASKED_AT, True),
        ("2024-03-05T09:59:59Z", ASKED_AT, False),  # an older sync does not
        ("2024-03-05T09:59:59Z", None, True),
        (None, None, False),  # Complete without a successful sync: not readable yet
        (None, ASKED_AT, False),
    ],
)
def test_complete_status_honours_synced_after(data_status, last_sync, synced_after, ready):
    entry = {"currentStatus": "Complete"} | ({"lastSuccessfulSync": last_sync} if last_sync else {})
    data_status({"invoices": entry})
    assert sensor(COMPANY, ["invoices"], synced_after=synced_after).poke({}) is ready


@pytest.mark.parametrize("synced_after", [None, ASKED_AT])
def test_not_supported_is_settled_with_a_warning(data_status, synced_after):
    # No lastSuccessfulSync: a type the platform lacks never had one, and must not need one.
    data_status(
        {
            "invoices": {"currentStatus": "Complete", "lastSuccessfulSync": "2024-03-05T10:05:00Z"},
            "purchaseOrders": {"currentStatus": "NotSupported", "latestSyncId": SYNC_ID},
        }
    )
    with capture_logs() as logs:
        assert sensor(COMPANY, ["invoices", "purchaseOrders"], synced_after=synced_after).poke({}) is True
    assert [(e["log_level"], e["event"]) for e in logs] == [
        (
            "warning",
            f"Codat does not support purchaseOrders for company {COMPANY} on its platform: not waiting for it; "
            "extracting it will be skipped.",
        )
    ]


def test_not_supported_does_not_hide_a_type_still_syncing(data_status):
    data_status(
        {
            "invoices": {"currentStatus": "Fetching", "lastSuccessfulSync": "2024-03-01T00:00:00Z"},
            "purchaseOrders": {"currentStatus": "NotSupported"},
        }
    )
    assert sensor(COMPANY, ["invoices", "purchaseOrders"], synced_after=ASKED_AT).poke({}) is False


@pytest.mark.parametrize(("status", "advice"), list(TERMINAL.items()))
def test_terminal_status_fails_the_task(data_status, status, advice):
    data_status(
        {
            "invoices": {"currentStatus": "Complete", "lastSuccessfulSync": "2024-03-05T10:05:00Z"},
            "chartOfAccounts": {
                "currentStatus": status,
                "lastSuccessfulSync": "2024-03-05T10:05:00Z",
                "latestSyncId": SYNC_ID,
            },
        }
    )
    with pytest.raises(CodatError) as err:
        sensor(COMPANY, ["invoices", "accounts"], synced_after=ASKED_AT).poke({})
    assert str(err.value) == (
        f"Codat's sync of chartOfAccounts for company {COMPANY} ended in {status} (pull operation {SYNC_ID}): {advice}"
    )


def test_a_status_newer_than_the_spec_fails_rather_than_waiting_forever(data_status):
    data_status({"invoices": {"currentStatus": "Paused"}})
    with pytest.raises(CodatError) as err:
        sensor(COMPANY, "invoices").poke({})
    assert str(err.value) == f"Codat's sync of invoices for company {COMPANY} ended in Paused: {GENERIC_ADVICE}"


@pytest.mark.fake_codat(companies=2, sync_delay_s=1)
def test_unsupported_type_does_not_block_a_refresh(fake_codat, codat_conn_env):
    """Against the fake: a refresh of a type the platform lacks ends NotSupported, and the others still count."""
    from airflow_provider_codat.hooks.codat import CodatHook

    company = fake_codat.company_ids()[0]
    fake_codat.set_unsupported(company, "purchaseOrders")
    asked_at = datetime.now(UTC).replace(microsecond=0)
    hook = CodatHook()
    hook.queue_refresh(company, "invoices")
    hook.queue_refresh(company, "purchaseOrders")
    wait = sensor(company, ["invoices", "purchaseOrders"], synced_after=asked_at.isoformat())
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while not wait.poke({}):
        assert datetime.now(UTC) < deadline, "the fake's sync never completed"
    assert hook.get_data_status(company)["purchaseOrders"]["currentStatus"] == "NotSupported"
