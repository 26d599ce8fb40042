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


def test_trigger_example_dag_through_the_rest_api(standalone):
    url = standalone["url"]
    token = requests.post(
        f"{url}/auth/token", json={"username": standalone["user"], "password": standalone["password"]}, timeout=10
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    dag = requests.get(f"{url}/api/v2/dags/example_codat_to_s3", headers=headers, timeout=10).json()
    assert dag["is_paused"] is False

    # A manual run with no logical date has no data interval: the operator reads everything up to the trigger.
    body = {"logical_date": None, "conf": {"data_types": ["invoices", "customers"]}}
    run = requests.post(f"{url}/api/v2/dags/example_codat_to_s3/dagRuns", headers=headers, json=body, timeout=30)
    assert run.status_code == 200, f"{run.text}\n{_log_tail(standalone['log'])}"
    run_id = run.json()["dag_run_id"]
    deadline = time.monotonic() + 420
    state = None
    while time.monotonic() < deadline:
        state = requests.get(
            f"{url}/api/v2/dags/example_codat_to_s3/dagRuns/{run_id}", headers=headers, timeout=10
        ).json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    assert state == "success"

    summary = requests.get(
        f"{url}/api/v2/dags/example_codat_to_s3/dagRuns/{run_id}/taskInstances/summarise/xcomEntries/return_value",
        headers=headers,
        timeout=10,
    ).json()["value"]
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert summary["failed"] == 0 and summary["complete"] == summary["planned"] > 0
    assert summary["records"] > 0


def _log_tail(log: Path, lines: int = 120) -> str:
    """The end of the standalone log: the api-server's traceback behind an HTTP 500 lands there."""
    text = log.read_text(errors="replace") if log.exists() else "(no standalone log)"
    return "\n".join(text.splitlines()[-lines:])
