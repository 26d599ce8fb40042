"""End-to-end set-up: a real Airflow (SQLite metadata DB), the fake Codat API and moto's S3 server, all over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """An initialised metadata DB in this worker's temporary AIRFLOW_HOME."""
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dags_folder(airflow_db) -> Path:
    """The dags folder of this worker's Airflow, where tests place the DAGs they run."""
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder"))


@pytest.fixture
def make_dag(dags_folder: Path) -> Callable[..., Any]:
    """``make_dag(dag_id, **operator_kwargs)``: a one-task CodatToS3Operator DAG that ``dag.test()`` can run."""
    from tests.e2e.dag_factory import register

    def make(dag_id: str, **operator_kwargs: Any):
        return register(dags_folder, dag_id, operator_kwargs)

    return make


@pytest.fixture
def aws_conn_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``aws_default`` at the local S3 server."""
    from airflow_provider_codat.testing.local_stack import aws_connection

    conn = aws_connection(moto_server)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    return moto_server


@pytest.fixture
def e2e(airflow_db, codat_conn_env, aws_conn_env, fake_codat, s3_client, s3_bucket) -> dict[str, Any]:
    """Everything an end-to-end DAG run needs."""
    return {"fake": fake_codat, "s3": s3_client, "bucket": s3_bucket}


def task_states(dag_run) -> dict[str, str]:
    """``{task_id[map_index]: state}`` of a finished run."""
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
        for ti in dag_run.get_task_instances()
    }


def xcom(dag_run, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """Read one XCom value of a finished run from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key, map_index=map_index)
            .one_or_none()
        )
        if row is None:
            return None
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


def read_objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under a prefix, by key."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


RunDag = Callable[..., Any]
