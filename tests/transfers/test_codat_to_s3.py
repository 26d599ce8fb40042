"""Unit tests of CodatToS3Operator: parse-time validation, lineage, assets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_codat.data_types import DATA_TYPES
from airflow_provider_codat.exceptions import CodatInputError
from airflow_provider_codat.transfers.codat_to_s3 import CodatToS3Operator, _clean_prefix, codat_s3_asset, table_columns

COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"


def op(**kwargs):
    return CodatToS3Operator(task_id="t", company_id=COMPANY, data_type="invoices", s3_bucket="b", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"file_format": "xml"}, "file_format='xml' is not supported: use one of jsonl, csv, parquet."),
        ({"compression": "bz2"}, "compression='bz2' is not supported for jsonl: use one of gzip, none."),
        (
            {"file_format": "parquet", "compression": "lz4"},
            "compression='lz4' is not supported for parquet: use one of gzip, none, snappy, zstd.",
        ),
        ({"lookback": timedelta(hours=-1)}, "lookback=datetime.timedelta(days=-1, seconds=82800) must be a timedelta of zero or more."),
        ({"encrypt": True, "sse_kms_key_id": "k"}, "Set either encrypt (SSE-S3) or sse_kms_key_id (SSE-KMS), not both."),
        ({"max_file_size": 10}, "max_file_size=10 must be at least 1 MiB (1048576 bytes)."),
    ],
)
def test_static_options_fail_at_parse_time(kwargs, message):
    with pytest.raises(CodatInputError) as err:
        op(**kwargs)
    assert str(err.value) == message


def test_templated_fields():
    assert set(CodatToS3Operator.template_fields) == {
        "company_id", "data_type", "s3_bucket", "s3_prefix", "query", "window_start", "window_end",
    }  # fmt: skip


@pytest.mark.parametrize(("prefix", "clean"), [("codat", "codat/"), ("/raw/codat/", "raw/codat/"), ("", "")])
def test_prefix(prefix, clean):
    assert _clean_prefix(prefix) == clean


@pytest.mark.parametrize("prefix", ["raw/../secret", "a//b", "./x"])
def test_prefix_cannot_climb(prefix):
    with pytest.raises(CodatInputError, match="has an empty, '.' or '..' segment"):
        _clean_prefix(prefix)


def test_openlineage_facets(monkeypatch):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_CODAT_DEFAULT", json.dumps({"conn_type": "codat", "password": "k"}))
    operator = op()
    assert operator.get_openlineage_facets_on_complete(None).inputs == []
    folder = f"codat/invoices/company_id={COMPANY}/window_start=20240304T000000Z/window_end=20240305T000000Z"
    operator._lineage = (COMPANY, "invoices", folder)
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("https://api.codat.io", f"companies/{COMPANY}/data/invoices")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://b", folder)]


def test_asset_for_data_aware_scheduling():
    asset = codat_s3_asset("bucket", "chartOfAccounts", s3_prefix="/raw/")
    assert (asset.uri, asset.name) == ("s3://bucket/raw/accounts", "codat_accounts")


def test_table_columns_are_the_schema_fields_plus_where_records_came_from():
    assert table_columns(DATA_TYPES["paymentMethods"]) == DATA_TYPES["paymentMethods"].fields
    assert table_columns(DATA_TYPES["bankAccounts"]) == ("_connectionId", *DATA_TYPES["bankAccounts"].fields)
    assert table_columns(DATA_TYPES["bankTransactions"])[:3] == ("_bankAccountId", "_connectionId", "accountId")
    assert table_columns(DATA_TYPES["itemReceipts"]) is None  # the writer samples the records


def test_a_window_ending_moments_from_now_is_read_only_once_its_end_has_passed(monkeypatch):
    from datetime import UTC, datetime

    from airflow_provider_codat.transfers import codat_to_s3
    from airflow_provider_codat.windows import Window

    slept = []
    monkeypatch.setattr(codat_to_s3.time, "sleep", slept.append)
    now = datetime.now(UTC)
    operator = op()
    operator._wait_for_window_end(Window("incremental", now - timedelta(hours=1), now + timedelta(seconds=30)))
    assert len(slept) == 1 and 29 < slept[0] <= 31  # the time left, plus a second
    operator._wait_for_window_end(Window("incremental", now - timedelta(hours=1), now - timedelta(seconds=1)))
    operator._wait_for_window_end(Window("full_refresh", None, now + timedelta(seconds=30)))
    assert len(slept) == 1  # a past end, or a window that is not incremental: no wait
