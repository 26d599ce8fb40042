"""
One company, a few data types: the operator composed the way you would in your own DAG.

Each extraction declares the S3 location of its data type as an Airflow Asset, so downstream DAGs
can be scheduled on fresh Codat data (``schedule=[codat_s3_asset(bucket, "invoices")]``); see
``example_codat_asset_consumer`` below.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, task

from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator, codat_s3_asset

COMPANY_ID = os.environ.get("CODAT_EXAMPLE_COMPANY_ID", "8a210b68-6988-11ed-a1eb-0242ac120002")
BUCKET = os.environ.get("CODAT_S3_BUCKET", "codat-landing")

with DAG(
    dag_id="example_codat_single_company",
    description="Invoices, bills and payments of one Codat company, every hour, into S3.",
    # CronDataIntervalTimetable, not "@hourly": Airflow 3's cron schedules otherwise give zero-width intervals.
    schedule=CronDataIntervalTimetable("15 * * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["codat", "example"],
) as dag:
    for data_type in ("invoices", "bills", "payments"):
        CodatToS3Operator(
            task_id=f"extract_{data_type}",
            company_id=COMPANY_ID,
            data_type=data_type,
            s3_bucket=BUCKET,
            s3_prefix="codat",
            # modifiedDate is when Codat cached a change; a lookback catches late arrivals.
            lookback=timedelta(minutes=30),
            file_format="parquet",
            compression="snappy",
            encrypt=True,
            outlets=[codat_s3_asset(BUCKET, data_type)],
        )

with DAG(
    dag_id="example_codat_asset_consumer",
    description="Runs whenever fresh Codat invoices land in S3.",
    schedule=[codat_s3_asset(BUCKET, "invoices")],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["codat", "example"],
) as consumer:

    @task
    def load_invoices(**context):
        """Replace with your load: read the window's _manifest.json, then the files it lists."""
        for event in context["triggering_asset_events"].values():
            for e in event:
                print(f"New Codat invoices: {e.asset.uri} ({e.source_dag_id}/{e.source_task_id})")

    load_invoices()
