"""Test set-up shared by every test: an isolated Airflow home, no examples, no real network."""

from __future__ import annotations

import os
import tempfile

# Before anything imports airflow: an isolated home, so tests never touch ~/airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="codat-tests-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# boto3 must never find real credentials or reach AWS from a test.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
pytest_plugins = ["tests.s3_fixtures", "airflow_provider_codat.testing.pytest_plugin"]
