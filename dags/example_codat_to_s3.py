"""
Incremental Codat extraction into S3: one task per company and data type, every day.

Copy this DAG and adjust ``DEFAULT_DATA_TYPES``, the schedule and the params. It:

1. lists every Codat company (all pages), optionally only the company ids given when triggering, and
   keeps each data type a company has a readable connection for: one of the data type's source type
   (Accounting, or Banking for ``banking-*``) that is Linked, or Unlinked/Deauthorized (Codat keeps the
   data pulled before unlinking readable);
2. plans one extraction per (company, data type), spread round-robin over a fixed number of mapped "lanes" so
   that no single mapped task exceeds Airflow's ``[core] max_map_length`` (1024 by default;
   200 companies x 17 data types is 3,400 extractions);
3. runs :class:`~airflow_provider_codat.transfers.codat_to_s3.CodatToS3Operator` for each, inside
   the ``codat`` pool so concurrent Codat calls stay within Codat's rate limits;
4. summarises records per company and data type, and what was skipped or failed.

Connections: ``codat_default`` (type ``codat``, the API key as password) and ``aws_default``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, get_current_context, task

from airflow_provider_codat.data_types import DATA_TYPES, INCREMENTAL_DATA_TYPES
from airflow_provider_codat.transfers.codat_to_s3 import SUMMARY_XCOM_KEY, CodatToS3Operator

#: The data types read when a run does not choose: Codat's core accounting types.
DEFAULT_DATA_TYPES = [
    "accounts", "customers", "suppliers", "invoices", "creditNotes", "payments", "bills", "billPayments",
    "billCreditNotes", "journalEntries", "journals", "taxRates", "trackingCategories", "paymentMethods",
    "items", "purchaseOrders", "salesOrders",
]  # fmt: skip

#: Mapped extraction tasks. Each holds at most max_map_length extractions, so the DAG handles
#: LANES x 1024 (company, data type) pairs with Airflow's defaults.
LANES = 8

#: The Airflow pool every extraction runs in. Its size caps concurrent extractions; each one makes
#: up to its hook's ``concurrency`` parallel requests, so keep pool size x concurrency well under
#: Codat's 1,000 requests per minute.
POOL = os.environ.get("CODAT_POOL", "codat")


def data_types_to_read(connections: Iterable[dict], data_types: Iterable[str]) -> list[str]:
    """
    Those of ``data_types`` a company's connections can give, in their order.

    A company may have any mix of Accounting, Banking and Commerce connections (a banking-only company
    is fine), and Codat keeps serving what it pulled before a connection was unlinked; a PendingAuth
    connection was never linked and has nothing.

    :param connections: the company's connections (their ``sourceType`` and ``status``).
    :param data_types: data type names from the catalog.
    """
    # Imported here, not at the top: the hook's dependencies would slow every parse of this file.
    from airflow_provider_codat.hooks.codat import READABLE_CONNECTION_STATUSES

    readable = {c.get("sourceType") for c in connections if c.get("status") in READABLE_CONNECTION_STATUSES}
    return [name for name in data_types if DATA_TYPES[name].source_type in readable]


with DAG(
    dag_id="example_codat_to_s3",
    description="Incremental extraction of Codat accounting data into S3, one task per company and data type.",
    # In Airflow 3 a cron string or "@daily" gives a zero-width data interval (start == end), which
    # would make every incremental window empty. CronDataIntervalTimetable gives real intervals:
    # the run at 01:00 on 5 March reads [4 March 01:00, 5 March 01:00).
    schedule=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2), "pool": POOL},
    params={
        "data_types": Param(
            DEFAULT_DATA_TYPES,
            type="array",
            items={"type": "string", "enum": list(INCREMENTAL_DATA_TYPES)},
            description="Codat data types to extract.",
        ),
        "company_ids": Param(
            [], type="array", items={"type": "string"}, description="Only these companies (empty: every company)."
        ),
        "full_refresh": Param(False, type="boolean", description="Read every record, ignoring the window."),
        "window_start": Param(
            "",
            type="string",
            description="Explicit window start (ISO 8601), for manual runs and backfills. Empty: the data interval.",
        ),
        "window_end": Param("", type="string", description="Explicit window end (ISO 8601, exclusive)."),
        "s3_bucket": Param(os.environ.get("CODAT_S3_BUCKET", "codat-landing"), type="string"),
        "s3_prefix": Param(os.environ.get("CODAT_S3_PREFIX", "codat"), type="string"),
        "lookback_minutes": Param(60, type="integer", minimum=0, description="Widen each window's start by this."),
    },
    tags=["codat", "example"],
) as dag:

    @task
    def list_companies(params: dict) -> dict[str, list[str]]:
        """Every company (or the ids asked for) with something to read: ``{company id: [data types]}``."""
        from airflow_provider_codat.hooks.codat import CodatHook, validate_id

        wanted = {validate_id(c, "company id") for c in params["company_ids"]}
        hook = CodatHook()
        to_read: dict[str, list[str]] = {}
        seen = set()
        # Companies with nothing to read, counted by what connections they have: that is why.
        left_out: Counter[str] = Counter()
        partly = 0  # companies kept for some of the data types only
        for company in hook.list_companies():
            if wanted and company["id"] not in wanted:
                continue
            seen.add(company["id"])
            connections = company.get("dataConnections")
            if connections is None:  # not embedded in this Codat response: ask
                connections = list(hook.list_connections(company["id"]))
            data_types = data_types_to_read(connections, params["data_types"])
            if data_types:
                to_read[company["id"]] = data_types
                partly += len(data_types) < len(params["data_types"])
            else:
                kinds = sorted({f"{c.get('sourceType')} {c.get('status')}" for c in connections})
                left_out[", ".join(kinds) or "no connections"] += 1
        if left_out:
            needed = " or ".join(sorted({DATA_TYPES[d].source_type for d in params["data_types"]}))
            print(
                f"Left out {left_out.total()} companies without a Linked, Unlinked or Deauthorized {needed} "
                "connection to read the chosen data types from: "
                + "; ".join(f"{count} with {kinds}" for kinds, count in left_out.most_common())
            )
        if partly:
            print(f"{partly} companies lack the connection some data types need: those types are not planned for them")
        if wanted - seen:
            print(f"Not extracted, unknown to Codat: {sorted(wanted - seen)}")
        print(f"{len(to_read)} companies to extract")
        return to_read

    def plan(to_read: dict[str, list[str]], params: dict, lane: int) -> list[dict]:
        """This lane's share of the (company, data type) pairs: every LANES-th one."""
        from airflow.configuration import conf

        pairs = [
            {
                "company_id": company_id,
                "data_type": data_type,
                "full_refresh": params["full_refresh"],
                "window_start": params["window_start"] or None,
                "window_end": params["window_end"] or None,
                "lookback": timedelta(minutes=params["lookback_minutes"]),
            }
            for company_id, data_types in to_read.items()
            for data_type in data_types
        ]
        limit = conf.getint("core", "max_map_length")
        if len(pairs) > LANES * limit:
            raise ValueError(
                f"{len(pairs)} extractions exceed {LANES} lanes x max_map_length {limit}: raise [core] "
                "max_map_length, raise LANES in this DAG, or narrow company_ids/data_types."
            )
        return pairs[lane::LANES]

    companies = list_companies()
    extract_tasks = []
    for lane in range(LANES):
        lane_pairs = task(plan, task_id=f"plan_lane_{lane}")(companies, lane=lane)
        extract = CodatToS3Operator.partial(
            task_id=f"extract_lane_{lane}",
            s3_bucket="{{ params.s3_bucket }}",
            s3_prefix="{{ params.s3_prefix }}",
            map_index_template="{{ task.company_id }}/{{ task.data_type }}",
        ).expand_kwargs(lane_pairs)
        extract_tasks.append(extract)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summarise(to_read: dict[str, list[str]]) -> dict:
        """Records per company and data type; skipped (with why) and failed extractions."""
        ti = get_current_context()["ti"]
        reports = []
        for lane in range(LANES):
            pulled = ti.xcom_pull(task_ids=f"extract_lane_{lane}", key=SUMMARY_XCOM_KEY)
            if isinstance(pulled, dict):
                pulled = [pulled]
            reports.extend(r for r in (pulled or []) if r)
        done = {(r["company_id"], r["data_type"]) for r in reports}
        planned = [(c, d) for c, data_types in to_read.items() for d in data_types]
        failed = sorted(p for p in planned if p not in done)
        complete = [r for r in reports if r["status"] == "complete"]
        skipped = [r for r in reports if r["status"] == "skipped"]
        for r in sorted(complete, key=lambda r: (r["company_id"], r["data_type"])):
            print(f"{r['company_id']}  {r['data_type']:<22} {r['records']:>8} records  {r['manifest']}")
        for r in skipped:
            print(f"SKIPPED {r['company_id']}  {r['data_type']}: {r.get('reason')}")
        for company_id, data_type in failed:
            print(f"FAILED  {company_id}  {data_type}")
        summary = {
            "planned": len(planned),
            "complete": len(complete),
            "skipped": len(skipped),
            "failed": len(failed),
            "records": sum(r["records"] for r in complete),
            "skipped_reasons": {f"{r['company_id']}/{r['data_type']}": r.get("reason") for r in skipped},
            "failed_extractions": [f"{c}/{d}" for c, d in failed],
        }
        print(f"Summary: {summary}")
        return summary

    summary = summarise(companies)
    extract_tasks >> summary

# The data types this DAG offers are the catalog's incremental ones; keep the defaults valid.
assert set(DEFAULT_DATA_TYPES) <= set(DATA_TYPES)
