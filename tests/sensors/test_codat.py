"""CodatDataStatusSensor against the fake Codat API over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
        f"Codat's sync of invoices for company {company} ended in FetchError: fix the connection in Codat, "
        "then queue a new refresh."
    )
