"""The local Airflow environment used by ``make demo``, ``make airflow`` and the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys

from airflow_provider_codat.testing.local_stack import airflow_env

PROBE = """
from airflow import settings
settings.configure_orm()
connection = settings.engine.raw_connection()
print(settings.engine.url.get_backend_name(), settings._get_connect_args("sync")["timeout"],
      settings._get_connect_args("async")["timeout"])
"""


def test_airflow_env_gives_sqlite_a_busy_timeout_long_enough_for_standalone(tmp_path):
    # With sqlite3's default 5 s, the api-server of `airflow standalone` answered HTTP 500 "Database error"
    # while the scheduler's tasks held the write lock.
    env = airflow_env(tmp_path / "home", tmp_path / "dags")
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["sqlite", "60", "60"]
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
