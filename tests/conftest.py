"""Test set-up shared by every test: an isolated Airflow home, no examples, no real network."""

from __future__ import annotations

import os
import tempfile

# Before anything imports airflow: an isolated home per process, so tests never touch ~/airflow
# and xdist workers never share a SQLite metadata DB (they inherit the controller's environment,
# so this must overwrite, not setdefault: two workers migrating one DB collide).
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="codat-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
os.environ.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# boto3 must never find real credentials or reach AWS from a test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
pytest_plugins = ["tests.s3_fixtures", "airflow_provider_codat.testing.pytest_plugin"]
