"""
Queue a Codat refresh, wait until Codat has synced, then extract: fresh data on demand.

The sensor runs in reschedule mode, so it frees its worker slot between checks while Codat syncs
(minutes to hours, depending on the accounting platform).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_codat.sensors.codat import CodatDataStatusSensor
from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator

with DAG(
    dag_id="example_codat_refresh_then_extract",
    description="Refresh one company's data in Codat, wait for the sync, extract it to S3.",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    params={
        "company_id": Param(
            os.environ.get("CODAT_EXAMPLE_COMPANY_ID", "8a210b68-6988-11ed-a1eb-0242ac120002"),
            type="string",
            description="The Codat company to refresh and extract.",
        ),
        "data_types": Param(["invoices", "customers"], type="array", items={"type": "string"}),
        "s3_bucket": Param(os.environ.get("CODAT_S3_BUCKET", "codat-landing"), type="string"),
    },
    tags=["codat", "example"],
) as dag:

    @task
    def queue_refresh(params: dict, ti=None) -> list[str]:
        """Ask Codat to refresh each data type; remember when, so only a newer sync counts."""
        from airflow_provider_codat.hooks.codat import CodatHook

        ti.xcom_push(key="asked_at", value=datetime.now(UTC).replace(microsecond=0).isoformat())
        hook = CodatHook()
        for data_type in params["data_types"]:
            hook.queue_refresh(params["company_id"], data_type)
        return params["data_types"]

    data_types = queue_refresh()

    synced = CodatDataStatusSensor(
        task_id="wait_for_sync",
        company_id="{{ params.company_id }}",
        data_types=data_types,
        synced_after="{{ ti.xcom_pull(task_ids='queue_refresh', key='asked_at') }}",
        mode="reschedule",
        poke_interval=30,
        timeout=timedelta(hours=6).total_seconds(),
    )

    extract = CodatToS3Operator.partial(
        task_id="extract",
        company_id="{{ params.company_id }}",
        s3_bucket="{{ params.s3_bucket }}",
        full_refresh=True,
        map_index_template="{{ task.data_type }}",
    ).expand(data_type=data_types)

    synced >> extract
