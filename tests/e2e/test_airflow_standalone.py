"""``make airflow`` for real: airflow standalone with the example DAGs, triggered through Airflow's REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("standalone"), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standalone(tmp_path):
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "airflow_local.py"), "--port", "0", "--home", str(tmp_path / "home"),
         "--companies", "3", "--records", "200", "--state-file", str(state_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not state_file.exists():
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "airflow standalone did not come up in 300 s"
            time.sleep(1)
        yield {**json.loads(state_file.read_text()), "log": tmp_path / "home" / "logs" / "standalone.log"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_scheduled_and_manual_runs_through_the_rest_api(standalone):
    api = AirflowApi(standalone)
    assert api.get("/dags/example_codat_to_s3")["is_paused"] is False

    # Unpaused with catchup off, the scheduler at once runs the latest complete data interval.
    scheduled = api.wait_for_run(api.find_run("scheduled"))
    assert scheduled["state"] == "success", _log_tail(standalone["log"])
    assert scheduled["data_interval_end"] > scheduled["data_interval_start"]
    summary = api.summary(scheduled["dag_run_id"])
    assert summary["failed"] == 0 and summary["complete"] == summary["planned"] > 0

    # A manual run with no logical date has no data interval: the operator reads everything up to the trigger.
    run_id = api.trigger({"logical_date": None, "conf": {"data_types": ["invoices", "customers"]}})
    manual = api.wait_for_run(run_id)
    assert manual["state"] == "success", _log_tail(standalone["log"])
    summary = api.summary(run_id)
    # 3 companies x 2 data types, each read in full: 200 records per company and type.
    assert summary["failed"] == 0 and summary["complete"] == summary["planned"] == 6
    assert summary["records"] == 3 * 2 * 200


class AirflowApi:
    """The few calls of Airflow's REST API (v2) this test makes, as the admin user."""

    def __init__(self, standalone: dict) -> None:
        self.url = f"{standalone['url']}/api/v2"
        self.log = standalone["log"]
        token = requests.post(
            f"{standalone['url']}/auth/token",
            json={"username": standalone["user"], "password": standalone["password"]},
            timeout=30,
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.url}{path}", headers=self.headers, params=params, timeout=30)
        assert response.status_code == 200, f"GET {path}: {response.text}\n{_log_tail(self.log)}"
        return response.json()

    def trigger(self, body: dict) -> str:
        # Airflow on SQLite lets one writer in at a time; while a run's tasks start, the api-server can
        # give up on the lock after sqlite3's 5 s and answer 500 "Database error" before creating the run.
        # A user would click Trigger again; so does this test, a bounded number of times.
        for _ in range(3):
            response = requests.post(
                f"{self.url}/dags/example_codat_to_s3/dagRuns", headers=self.headers, json=body, timeout=60
            )
            if response.status_code != 500 or "Database error" not in response.text:
                break
            time.sleep(5)
        assert response.status_code == 200, f"{response.text}\n{_log_tail(self.log)}"
        return response.json()["dag_run_id"]

    def find_run(self, run_type: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.get("/dags/example_codat_to_s3/dagRuns", run_type=run_type)["dag_runs"]
            if runs:
                return runs[0]["dag_run_id"]
            time.sleep(2)
        raise AssertionError(f"No {run_type} run of example_codat_to_s3 appeared in {timeout} s")

    def wait_for_run(self, run_id: str, timeout: float = 420) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/dags/example_codat_to_s3/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise AssertionError(f"Run {run_id} did not finish in {timeout} s")

    def summary(self, run_id: str) -> dict:
        path = f"/dags/example_codat_to_s3/dagRuns/{run_id}/taskInstances/summarise/xcomEntries/return_value"
        value = self.get(path)["value"]
        return json.loads(value) if isinstance(value, str) else value


def _log_tail(log: Path, lines: int = 120) -> str:
    """The end of the standalone log: the api-server's traceback behind an HTTP 500 lands there."""
    text = log.read_text(errors="replace") if log.exists() else "(no standalone log)"
    return "\n".join(text.splitlines()[-lines:])
