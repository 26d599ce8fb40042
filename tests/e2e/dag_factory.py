"""Builds the single-operator DAGs the end-to-end tests run, from JSON specs the tests write.

``dag.test()`` in Airflow 3 runs only DAGs it can find in a bundle's folder, so each test writes a
spec (dag id -> operator kwargs) next to ``DAG_FILE`` in the dags folder, and gets back the same
DAG object that Airflow's parse of that folder builds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SPECS_NAME = "e2e_specs.json"

#: The DAG file placed in the dags folder: it builds one DAG per spec.
DAG_FILE = f"""
# Airflow DAG file (safe mode parses only files that mention airflow and dag).
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.e2e.dag_factory import build_all
globals().update(build_all(__file__))
"""


def build(dag_id: str, operator_kwargs: dict[str, Any]):
    from airflow.sdk import DAG

    from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator

    kwargs = dict(operator_kwargs)
    if "lookback_seconds" in kwargs:
        kwargs["lookback"] = timedelta(seconds=kwargs.pop("lookback_seconds"))
    with DAG(dag_id, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False) as dag:
        CodatToS3Operator(task_id="extract", retries=0, **kwargs)
    return dag


def build_all(dag_file: str) -> dict[str, Any]:
    path = Path(dag_file).parent / SPECS_NAME
    specs = json.loads(path.read_text()) if path.exists() else {}
    return {dag_id: build(dag_id, kwargs) for dag_id, kwargs in specs.items()}


def register(dags_folder: Path, dag_id: str, operator_kwargs: dict[str, Any]):
    """Write the spec and the DAG file; return the DAG object."""
    dags_folder.mkdir(parents=True, exist_ok=True)
    (dags_folder / "e2e_dags.py").write_text(DAG_FILE)
    path = dags_folder / SPECS_NAME
    specs = json.loads(path.read_text()) if path.exists() else {}
    specs[dag_id] = operator_kwargs
    path.write_text(json.dumps(specs, indent=1, sort_keys=True))
    return build(dag_id, operator_kwargs)
