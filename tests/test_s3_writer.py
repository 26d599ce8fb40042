"""Tests for the streaming S3 writer, against moto's S3 server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from airflow_provider_codat import s3_writer
from airflow_provider_codat.exceptions import CodatError, CodatInputError
from airflow_provider_codat.s3_writer import (
    EXTRA_COLUMN,
    S3DatasetWriter,
    S3WriteError,
    WrittenFile,
    delete_keys,
    file_extension,
    put_json,
)
from tests import s3_fixtures

# The shared moto S3 fixtures, bound to names here so pytest finds them for this module.
moto_server = s3_fixtures.moto_server
s3_client = s3_fixtures.s3_client
s3_bucket = s3_fixtures.s3_bucket

PART_SIZE = s3_fixtures.MOTO_MIN_PART_SIZE
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch):
    monkeypatch.setattr(s3_writer, "UPLOAD_RETRY_WAIT_SECONDS", 0)


def make_writer(client, bucket, *, prefix="data/part", **kwargs) -> S3DatasetWriter:
    kwargs.setdefault("part_size", PART_SIZE)
    kwargs.setdefault("allow_small_parts", True)
    extension = file_extension(kwargs.get("file_format", "jsonl"), kwargs.get("compression", "gzip"))
    return S3DatasetWriter(client, bucket, lambda index: f"{prefix}-{index:05d}{extension}", **kwargs)


def read(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys_in(client, bucket) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def pending_uploads(client, bucket) -> list[dict]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def invoices(count: int, *, start: int = 0, payload: int = 0, seed: int = 7) -> list[dict]:
    """Invoice-like records; ``payload`` adds that many hex characters that gzip cannot shrink much."""
    rng = random.Random(seed + start)
    return [
        {
            "id": f"inv-{number:06d}",
            "customerRef": {"id": f"c{number % 7}", "companyName": "Bright Ltd"},
            "totalAmount": number * 10,
            "currencyRate": 1.5,
            "status": "Submitted",
            "metadata": {"isDeleted": False},
            "note": rng.randbytes(payload // 2).hex() if payload else None,
        }
        for number in range(start, start + count)
    ]


def write_in_pages(writer: S3DatasetWriter, records: list[dict], page_size: int = 20) -> None:
    for start in range(0, len(records), page_size):
        writer.write_records(records[start : start + page_size])


def client_error(code: str, status: int, message: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FaultyClient:
    """Wraps a real client; the named operations raise the queued errors, then behave normally."""

    def __init__(self, client, **failures: list[BaseException]):
        self._client = client
        self._failures = failures
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._client, name)
        if not callable(operation) or name == "meta":
            return operation

        def call(**kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            queued = self._failures.get(name)
            if queued:
                raise queued.pop(0)
            return operation(**kwargs)

        return call


class TestJsonLines:
    def test_gzip_round_trip(self, s3_client, s3_bucket):
        records = [
            {"id": "1", "name": "Café Ltd", "amount": 240, "rate": 1.5, "paid": False, "ref": None},
            {"id": "2", "lines": [{"q": 2, "tags": ["a", "b"]}], "metadata": {"isDeleted": True}},
            {"id": "3"},
        ]
        writer = make_writer(s3_client, s3_bucket)
        writer.write_records(records[:2])
        writer.write_records(records[2:])
        writer.write_records([])
        files = writer.close()

        stored = read(s3_client, s3_bucket, "data/part-00000.jsonl.gz")
        assert jsonl(gzip.decompress(stored)) == records
        assert files == [
            WrittenFile(
                key="data/part-00000.jsonl.gz",
                records=3,
                bytes=len(stored),
                sha256=hashlib.sha256(stored).hexdigest(),
                parts=1,
                etag=s3_client.head_object(Bucket=s3_bucket, Key="data/part-00000.jsonl.gz")["ETag"],
            )
        ]
        assert writer.records_written == 3
        assert writer.files == tuple(files)

    def test_gzip_headers_and_tools(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket)
        writer.write_records(invoices(50))
        (written,) = writer.close()
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert head["ContentType"] == "application/gzip"
        # No Content-Encoding: HTTP clients must not unzip the file on download.
        assert "ContentEncoding" not in head
        stored = read(s3_client, s3_bucket, written.key)
        assert stored[:2] == b"\x1f\x8b"
        assert jsonl(gzip.GzipFile(fileobj=io.BytesIO(stored)).read()) == invoices(50)
        if shutil.which("gzip"):
            unzipped = subprocess.run(["gzip", "-dc"], input=stored, capture_output=True, check=True).stdout
            assert jsonl(unzipped) == invoices(50)

    def test_compression_level_changes_output(self, s3_client, s3_bucket):
        sizes = []
        for level in (0, 9):
            writer = make_writer(s3_client, s3_bucket, prefix=f"level{level}", compression_level=level)
            writer.write_records(invoices(200))
            (written,) = writer.close()
            assert jsonl(gzip.decompress(read(s3_client, s3_bucket, written.key))) == invoices(200)
            sizes.append(written.bytes)
        assert sizes[0] > 3 * sizes[1]

    def test_plain_jsonl_is_exact(self, s3_client, s3_bucket):
        records = [{"id": "1", "amount": 240, "ok": True}, {"id": "2", "nested": {"a": [1, None]}}]
        writer = make_writer(s3_client, s3_bucket, compression="none")
        writer.write_records(records)
        (written,) = writer.close()
        assert written.key == "data/part-00000.jsonl"
        assert read(s3_client, s3_bucket, written.key) == (
            b'{"id":"1","amount":240,"ok":true}\n{"id":"2","nested":{"a":[1,null]}}\n'
        )
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert head["ContentType"] == "application/x-ndjson"


class TestCsv:
    def test_exact_values(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 2)
        records = [
            {
                "id": "1",
                "name": 'Bright, "the" Ltd',
                "memo": "line one\nline two",
                "amount": 240,
                "rate": 1.5,
                "paid": True,
                "due": None,
                "customerRef": {"id": "c1", "companyName": "Bright Ltd"},
                "tags": ["a", "b"],
            },
            {"id": "2", "amount": 0, "paid": False},
        ]
        later = [{"id": "3", "name": "Late Ltd", "newField": {"x": 1}, "other": 5}]
        writer = make_writer(s3_client, s3_bucket, file_format="csv")
        writer.write_records(records)
        writer.write_records(later)
        (written,) = writer.close()

        assert written.key == "data/part-00000.csv.gz"
        text = gzip.decompress(read(s3_client, s3_bucket, written.key)).decode()
        assert text.splitlines()[0] == "amount,customerRef,due,id,memo,name,paid,rate,tags,_extra"
        assert list(csv.DictReader(io.StringIO(text))) == [
            {
                "amount": "240",
                "customerRef": '{"id":"c1","companyName":"Bright Ltd"}',
                "due": "",
                "id": "1",
                "memo": "line one\nline two",
                "name": 'Bright, "the" Ltd',
                "paid": "true",
                "rate": "1.5",
                "tags": '["a","b"]',
                "_extra": "",
            },
            {
                "amount": "0",
                "customerRef": "",
                "due": "",
                "id": "2",
                "memo": "",
                "name": "",
                "paid": "false",
                "rate": "",
                "tags": "",
                "_extra": "",
            },
            {
                "amount": "",
                "customerRef": "",
                "due": "",
                "id": "3",
                "memo": "",
                "name": "Late Ltd",
                "paid": "",
                "rate": "",
                "tags": "",
                "_extra": '{"newField":{"x":1},"other":5}',
            },
        ]
        assert written.records == 3

    def test_plain_csv_bytes(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none")
        writer.write_records([{"b": "x", "a": 1}, {"a": 2, "b": "y,z", "c": True}])
        (written,) = writer.close()
        assert written.key == "data/part-00000.csv"
        assert read(s3_client, s3_bucket, written.key) == b'a,b,c,_extra\n1,x,,\n2,"y,z",true,\n'
        assert s3_client.head_object(Bucket=s3_bucket, Key=written.key)["ContentType"] == "text/csv; charset=utf-8"

    def test_columns_come_from_a_sample_across_pages(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 3)
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none")
        # Pages smaller than the sample: the columns wait for the third record.
        writer.write_records([{"id": "1"}])
        writer.write_records([{"id": "2", "b": "x"}])
        writer.write_records([{"id": "3", "a": "y"}, {"id": "4", "z": "late"}])
        writer.write_records([{"id": "5", "b": "w"}])
        (written,) = writer.close()
        assert read(s3_client, s3_bucket, written.key) == (
            b'a,b,id,_extra\n,,1,\n,x,2,\ny,,3,\n,,4,"{""z"":""late""}"\n,w,5,\n'
        )

    def test_columns_from_fewer_records_than_the_sample(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none")
        writer.write_records([{"b": 1}, {"a": 2}])
        (written,) = writer.close()
        assert read(s3_client, s3_bucket, written.key) == b"a,b,_extra\n,1,\n2,,\n"

    def test_given_columns_keep_their_order(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none", columns=["id", "name"])
        writer.write_records([{"name": "A", "id": "1", "x": 1}])
        (written,) = writer.close()
        assert read(s3_client, s3_bucket, written.key) == b'id,name,_extra\n1,A,"{""x"":1}"\n'

    def test_a_key_named_extra_goes_into_extra(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none")
        writer.write_records([{"id": "1", EXTRA_COLUMN: "mine"}])
        (written,) = writer.close()
        assert read(s3_client, s3_bucket, written.key) == b'id,_extra\n1,"{""_extra"":""mine""}"\n'

    def test_every_rolled_file_has_the_same_header(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 2)
        writer = make_writer(s3_client, s3_bucket, file_format="csv", compression="none", max_file_size=100)
        writer.write_records([{"id": f"{n}", "v": "x" * 40} for n in range(2)])
        writer.write_records([{"id": "2", "w": "new"}])
        files = writer.close()
        assert [(f.key, f.records) for f in files] == [("data/part-00000.csv", 2), ("data/part-00001.csv", 1)]
        assert read(s3_client, s3_bucket, files[1].key) == b'id,v,_extra\n2,,"{""w"":""new""}"\n'


class TestParquet:
    def test_stable_all_string_schema_across_row_groups(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 3)
        records = [
            {"id": "1", "amount": 240, "paid": True, "ref": {"id": "c1"}},
            {"id": "2", "amount": 1.5, "paid": None, "ref": None},
            {"id": "3", "lines": [1, 2]},
            {"id": "4", "amount": 7, "extra": "late"},
            {"id": "5"},
        ]
        writer = make_writer(s3_client, s3_bucket, file_format="parquet", parquet_row_group_size=2)
        writer.write_records(records[:3])
        writer.write_records(records[3:])
        (written,) = writer.close()

        assert written.key == "data/part-00000.parquet"
        assert written.records == 5
        stored = read(s3_client, s3_bucket, written.key)
        parquet_file = pq.ParquetFile(io.BytesIO(stored))
        assert parquet_file.metadata.num_row_groups == 3
        assert [parquet_file.metadata.row_group(i).num_rows for i in range(3)] == [2, 2, 1]
        expected_schema = pa.schema(
            [(name, pa.string()) for name in ("amount", "id", "lines", "paid", "ref", "_extra")]
        )
        for index in range(3):
            assert parquet_file.read_row_group(index).schema.equals(expected_schema, check_metadata=False)
        assert pq.read_table(io.BytesIO(stored)).to_pylist() == [
            {"amount": "240", "id": "1", "lines": None, "paid": "true", "ref": '{"id":"c1"}', "_extra": None},
            {"amount": "1.5", "id": "2", "lines": None, "paid": None, "ref": None, "_extra": None},
            {"amount": None, "id": "3", "lines": "[1,2]", "paid": None, "ref": None, "_extra": None},
            {"amount": "7", "id": "4", "lines": None, "paid": None, "ref": None, "_extra": '{"extra":"late"}'},
            {"amount": None, "id": "5", "lines": None, "paid": None, "ref": None, "_extra": None},
        ]
        assert written.sha256 == hashlib.sha256(stored).hexdigest()
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert head["ContentType"] == "application/vnd.apache.parquet"

    @pytest.mark.parametrize(
        ("compression", "codec"),
        [("gzip", "GZIP"), ("snappy", "SNAPPY"), ("zstd", "ZSTD"), ("none", "UNCOMPRESSED")],
    )
    def test_codec_is_parquets_own(self, s3_client, s3_bucket, compression, codec):
        writer = make_writer(s3_client, s3_bucket, file_format="parquet", compression=compression)
        writer.write_records(invoices(20))
        (written,) = writer.close()
        assert written.key == "data/part-00000.parquet"
        stored = read(s3_client, s3_bucket, written.key)
        assert stored[:4] == b"PAR1"
        assert pq.ParquetFile(io.BytesIO(stored)).metadata.row_group(0).column(0).compression == codec
        assert pq.read_table(io.BytesIO(stored)).column("id").to_pylist() == [r["id"] for r in invoices(20)]

    def test_rolls_on_row_group_boundaries_with_one_schema(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 50)
        writer = make_writer(s3_client, s3_bucket, file_format="parquet", parquet_row_group_size=50, max_file_size=1)
        writer.write_records(invoices(120))
        writer.write_records([{"id": "late", "newKey": 1}])
        files = writer.close()
        assert [f.records for f in files] == [50, 50, 21]
        tables = [pq.read_table(io.BytesIO(read(s3_client, s3_bucket, f.key))) for f in files]
        assert all(table.schema.equals(tables[0].schema) for table in tables)
        assert tables[2].to_pylist()[-1]["_extra"] == '{"newKey":1}'

    def test_without_pyarrow(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        with pytest.raises(
            CodatInputError,
            match=re.escape(
                "Parquet output needs pyarrow, which is not installed: pip install 'airflow-provider-codat[parquet]'."
            ),
        ):
            make_writer(s3_client, s3_bucket, file_format="parquet")


class TestMultipartAndRolling:
    def test_big_file_goes_up_in_parts(self, s3_client, s3_bucket):
        records = invoices(400, payload=800)
        writer = make_writer(s3_client, s3_bucket, compression="none")
        write_in_pages(writer, records)
        (written,) = writer.close()

        stored = read(s3_client, s3_bucket, written.key)
        assert len(stored) > 5 * PART_SIZE
        assert written.parts >= 5
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert head["ETag"] == written.etag
        assert written.etag.endswith(f'-{written.parts}"')
        assert (written.bytes, written.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
        assert jsonl(stored) == records
        assert pending_uploads(s3_client, s3_bucket) == []

    def test_gzip_multipart(self, s3_client, s3_bucket):
        records = invoices(600, payload=1000)
        writer = make_writer(s3_client, s3_bucket)
        for start in range(0, 600, 100):
            writer.write_records(records[start : start + 100])
        (written,) = writer.close()
        stored = read(s3_client, s3_bucket, written.key)
        assert written.parts > 1
        assert written.etag.endswith(f'-{written.parts}"')
        assert written.sha256 == hashlib.sha256(stored).hexdigest()
        assert jsonl(gzip.decompress(stored)) == records

    def test_rolls_to_new_files_at_max_file_size(self, s3_client, s3_bucket):
        records = invoices(100, payload=100)
        page_bytes = max(len(json.dumps(r, separators=(",", ":"))) + 1 for r in records) * 10
        writer = make_writer(s3_client, s3_bucket, compression="none", max_file_size=4 * page_bytes)
        for start in range(0, 100, 10):
            writer.write_records(records[start : start + 10])
        files = writer.close()

        assert [f.key for f in files] == [f"data/part-{i:05d}.jsonl" for i in range(len(files))]
        assert len(files) == 3
        for written in files[:-1]:
            assert 4 * page_bytes <= written.bytes < 5 * page_bytes
        read_back = []
        for written in files:
            stored = read(s3_client, s3_bucket, written.key)
            assert (written.bytes, written.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
            assert len(jsonl(stored)) == written.records
            read_back += jsonl(stored)
        assert read_back == records
        assert sum(f.records for f in files) == writer.records_written == 100

    def test_rolled_files_can_each_be_multipart(self, s3_client, s3_bucket):
        records = invoices(900, payload=1000)
        writer = make_writer(s3_client, s3_bucket, max_file_size=3 * PART_SIZE)
        for start in range(0, 900, 50):
            writer.write_records(records[start : start + 50])
        files = writer.close()
        assert len(files) >= 2
        assert all(f.parts >= 2 for f in files[:-1])
        read_back = []
        for written in files:
            stored = read(s3_client, s3_bucket, written.key)
            assert s3_client.head_object(Bucket=s3_bucket, Key=written.key)["ETag"] == written.etag
            read_back += jsonl(gzip.decompress(stored))
        assert read_back == records

    def test_one_big_iterable_is_taken_in_chunks(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "_CHUNK_RECORDS", 100)
        writer = make_writer(s3_client, s3_bucket, compression="none", max_file_size=1)
        writer.write_records(record for record in invoices(250))
        files = writer.close()
        assert [f.records for f in files] == [100, 100, 50]

    def test_part_size_below_s3_minimum_is_refused(self, s3_client, s3_bucket):
        with pytest.raises(
            CodatInputError,
            match=re.escape("part_size 1048576 is below S3's minimum part size of 5242880 bytes (5 MiB)."),
        ):
            S3DatasetWriter(s3_client, s3_bucket, str, part_size=1024 * 1024)

    def test_too_many_parts_is_refused(self, s3_client, s3_bucket):
        with pytest.raises(
            CodatInputError,
            match=re.escape(
                "max_file_size 100000000000 would need more than S3's 10000 parts of 5242880 bytes: "
                "raise part_size or lower max_file_size."
            ),
        ):
            S3DatasetWriter(s3_client, s3_bucket, str, part_size=5 * 1024 * 1024, max_file_size=10**11)


class TestEncryptionAndHeaders:
    @pytest.mark.parametrize("count", [5, 400], ids=["single-put", "multipart"])
    def test_sse_s3(self, s3_client, s3_bucket, count):
        writer = make_writer(s3_client, s3_bucket, compression="none", extra_args={"ServerSideEncryption": "AES256"})
        write_in_pages(writer, invoices(count, payload=800))
        (written,) = writer.close()
        assert (written.parts > 1) == (count == 400)
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert head["ServerSideEncryption"] == "AES256"

    @pytest.mark.parametrize("count", [5, 400], ids=["single-put", "multipart"])
    def test_sse_kms(self, s3_client, s3_bucket, count):
        extra_args = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}
        writer = make_writer(s3_client, s3_bucket, compression="none", extra_args=extra_args)
        write_in_pages(writer, invoices(count, payload=800))
        (written,) = writer.close()
        assert (written.parts > 1) == (count == 400)
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)

    def test_extra_args_override_content_type_and_add_metadata(self, s3_client, s3_bucket):
        extra_args = {"ContentType": "application/x-ndjson", "Metadata": {"dataset": "invoices"}}
        writer = make_writer(s3_client, s3_bucket, extra_args=extra_args)
        writer.write_records(invoices(400, payload=800))
        (written,) = writer.close()
        head = s3_client.head_object(Bucket=s3_bucket, Key=written.key)
        assert (head["ContentType"], head["Metadata"]) == ("application/x-ndjson", {"dataset": "invoices"})

    def test_checksum_algorithm_is_carried_to_every_part(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, compression="none", extra_args={"ChecksumAlgorithm": "SHA256"})
        records = invoices(400, payload=800)
        write_in_pages(writer, records)
        (written,) = writer.close()
        assert written.parts > 1
        assert jsonl(read(s3_client, s3_bucket, written.key)) == records

    @pytest.mark.parametrize(
        ("extra_args", "message"),
        [
            (
                {"Bucket": "other"},
                "extra_args must not set 'Bucket': the writer sets it.",
            ),
            (
                {"PartNumber": 3},
                "extra_args must not set 'PartNumber': the writer sets it.",
            ),
            (
                {"ServerSideEncryptionn": "AES256"},
                "extra_args key 'ServerSideEncryptionn' is not a parameter of S3's CreateMultipartUpload and "
                "PutObject; use keys such as ServerSideEncryption, SSEKMSKeyId, ContentType, Metadata, "
                "StorageClass.",
            ),
        ],
    )
    def test_bad_extra_args(self, s3_client, s3_bucket, extra_args, message):
        with pytest.raises(CodatInputError, match=f"^{re.escape(message)}$"):
            make_writer(s3_client, s3_bucket, extra_args=extra_args)


class TestFailures:
    def test_a_part_that_fails_once_is_retried(self, s3_client, s3_bucket):
        flaky = FaultyClient(
            s3_client,
            upload_part=[client_error("InternalError", 500, "We encountered an internal error.", "UploadPart")],
        )
        records = invoices(400, payload=800)
        writer = make_writer(flaky, s3_bucket, compression="none")
        write_in_pages(writer, records)
        (written,) = writer.close()
        assert written.parts > 1
        assert flaky.calls["upload_part"] == written.parts + 1
        assert jsonl(read(s3_client, s3_bucket, written.key)) == records
        assert written.etag.endswith(f'-{written.parts}"')

    def test_connection_errors_are_retried(self, s3_client, s3_bucket):
        flaky = FaultyClient(
            s3_client,
            put_object=[EndpointConnectionError(endpoint_url="http://127.0.0.1:1")] * 2,
        )
        writer = make_writer(flaky, s3_bucket)
        writer.write_records(invoices(3))
        (written,) = writer.close()
        assert flaky.calls["put_object"] == 3
        assert jsonl(gzip.decompress(read(s3_client, s3_bucket, written.key))) == invoices(3)

    def test_a_part_that_keeps_failing_aborts_the_upload(self, s3_client, s3_bucket):
        error = client_error("InternalError", 500, "We encountered an internal error. Please try again.", "UploadPart")
        failing = FaultyClient(s3_client, upload_part=[error] * 3)
        writer = make_writer(failing, s3_bucket, compression="none")
        with pytest.raises(S3WriteError) as raised:
            writer.write_records(invoices(400, payload=800))

        assert str(raised.value) == (
            f"Could not write s3://{s3_bucket}/data/part-00000.jsonl: upload_part (part 1) failed after 3 "
            f"attempts with S3 error InternalError: We encountered an internal error. Please try again. "
            f"Its multipart upload was aborted, so no object was written."
        )
        assert (raised.value.bucket, raised.value.key, raised.value.error_code) == (
            s3_bucket,
            "data/part-00000.jsonl",
            "InternalError",
        )
        assert isinstance(raised.value, CodatError)
        assert raised.value.__cause__ is error
        assert failing.calls["upload_part"] == 3
        assert failing.calls["abort_multipart_upload"] == 1
        assert keys_in(s3_client, s3_bucket) == []
        assert pending_uploads(s3_client, s3_bucket) == []
        with pytest.raises(
            S3WriteError, match=re.escape(f"This S3 writer for s3://{s3_bucket} was aborted: start a new writer.")
        ):
            writer.write_records(invoices(1))
        with pytest.raises(S3WriteError, match="was aborted"):
            writer.close()

    def test_permanent_errors_are_not_retried(self, s3_client, s3_bucket):
        failing = FaultyClient(
            s3_client, upload_part=[client_error("AccessDenied", 403, "Access Denied", "UploadPart")]
        )
        writer = make_writer(failing, s3_bucket, compression="none")
        with pytest.raises(S3WriteError) as raised:
            writer.write_records(invoices(400, payload=800))
        assert str(raised.value) == (
            f"Could not write s3://{s3_bucket}/data/part-00000.jsonl: upload_part (part 1) failed with S3 "
            f"error AccessDenied: Access Denied. Its multipart upload was aborted, so no object was written."
        )
        assert failing.calls["upload_part"] == 1
        assert pending_uploads(s3_client, s3_bucket) == []

    def test_a_single_put_that_keeps_failing(self, s3_client, s3_bucket):
        error = client_error("SlowDown", 503, "Please reduce your request rate.", "PutObject")
        failing = FaultyClient(s3_client, put_object=[error] * 3)
        writer = make_writer(failing, s3_bucket)
        writer.write_records(invoices(3))
        with pytest.raises(S3WriteError) as raised:
            writer.close()
        assert str(raised.value) == (
            f"Could not write s3://{s3_bucket}/data/part-00000.jsonl.gz: put_object failed after 3 attempts "
            f"with S3 error SlowDown: Please reduce your request rate. No object was written."
        )
        assert keys_in(s3_client, s3_bucket) == []

    def test_failed_completion_aborts(self, s3_client, s3_bucket):
        error = client_error("InvalidPart", 400, "One or more of the specified parts could not be found.", "Complete")
        failing = FaultyClient(s3_client, complete_multipart_upload=[error])
        writer = make_writer(failing, s3_bucket, compression="none")
        writer.write_records(invoices(400, payload=800))
        with pytest.raises(S3WriteError) as raised:
            writer.close()
        assert str(raised.value) == (
            f"Could not write s3://{s3_bucket}/data/part-00000.jsonl: complete_multipart_upload failed with "
            f"S3 error InvalidPart: One or more of the specified parts could not be found. Its multipart "
            f"upload was aborted, so no object was written."
        )
        assert pending_uploads(s3_client, s3_bucket) == []

    def test_a_failed_abort_is_reported(self, s3_client, s3_bucket):
        failing = FaultyClient(
            s3_client,
            upload_part=[client_error("AccessDenied", 403, "Access Denied", "UploadPart")],
            abort_multipart_upload=[client_error("AccessDenied", 403, "Access Denied", "AbortMultipartUpload")],
        )
        writer = make_writer(failing, s3_bucket, compression="none")
        with pytest.raises(S3WriteError) as raised:
            writer.write_records(invoices(400, payload=800))
        assert str(raised.value).endswith(
            "Access Denied. Aborting its multipart upload also failed (AccessDenied): an "
            "AbortIncompleteMultipartUpload lifecycle rule on the bucket will remove the uploaded parts."
        )

    def test_any_error_while_writing_aborts(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, compression="none")
        writer.write_records(invoices(300, payload=800))
        assert len(pending_uploads(s3_client, s3_bucket)) == 1
        with pytest.raises(TypeError):
            writer.write_records([{"id": "x", "bad": object()}])
        assert pending_uploads(s3_client, s3_bucket) == []
        assert keys_in(s3_client, s3_bucket) == []

    def test_abort_is_idempotent_and_keeps_completed_files(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket, compression="none", max_file_size=3 * PART_SIZE)
        write_in_pages(writer, invoices(400, payload=800))
        completed = writer.files
        assert len(completed) >= 1
        assert len(pending_uploads(s3_client, s3_bucket)) == 1
        writer.abort()
        writer.abort()
        assert pending_uploads(s3_client, s3_bucket) == []
        assert keys_in(s3_client, s3_bucket) == [f.key for f in completed]

    def test_abort_with_an_open_parquet_file(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "SCHEMA_SAMPLE_RECORDS", 10)
        writer = make_writer(s3_client, s3_bucket, file_format="parquet", compression="none", parquet_row_group_size=50)
        writer.write_records(invoices(400, payload=800))
        assert len(pending_uploads(s3_client, s3_bucket)) == 1
        writer.abort()
        assert pending_uploads(s3_client, s3_bucket) == []
        assert keys_in(s3_client, s3_bucket) == []

    def test_context_manager_aborts_on_error(self, s3_client, s3_bucket):
        with pytest.raises(RuntimeError, match="task killed"), make_writer(s3_client, s3_bucket) as writer:
            writer.write_records(invoices(400, payload=2000))
            assert len(pending_uploads(s3_client, s3_bucket)) == 1
            raise RuntimeError("task killed")
        assert pending_uploads(s3_client, s3_bucket) == []
        assert keys_in(s3_client, s3_bucket) == []

    def test_context_manager_closes_on_success(self, s3_client, s3_bucket):
        with make_writer(s3_client, s3_bucket) as writer:
            writer.write_records(invoices(3))
        assert [f.key for f in writer.files] == ["data/part-00000.jsonl.gz"]
        assert writer.close() == list(writer.files)

    def test_duplicate_keys_are_refused(self, s3_client, s3_bucket):
        writer = S3DatasetWriter(s3_client, s3_bucket, lambda index: "same.jsonl", max_file_size=1)
        writer.write_records(invoices(1))
        with pytest.raises(
            CodatInputError,
            match=re.escape(
                "key_for_file(1) returned 'same.jsonl', the key of an earlier file: keys must be unique "
                "(include the index)."
            ),
        ):
            writer.write_records(invoices(1))


class TestLifecycle:
    def test_no_records_no_files(self, s3_client, s3_bucket):
        for file_format in ("jsonl", "csv", "parquet"):
            writer = make_writer(s3_client, s3_bucket, file_format=file_format)
            writer.write_records([])
            assert writer.close() == []
        assert keys_in(s3_client, s3_bucket) == []

    def test_close_twice_returns_the_same_files(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket)
        writer.write_records(invoices(2))
        assert writer.close() == writer.close()
        with pytest.raises(S3WriteError, match="was closed"):
            writer.write_records(invoices(1))

    def test_memory_stays_bounded(self):
        # A stub client: only the writer's own allocations are measured, not botocore's or moto's.
        class DiscardingClient:
            meta = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").meta

            def put_object(self, **kwargs):
                return {"ETag": '"put"'}

            def create_multipart_upload(self, **kwargs):
                return {"UploadId": "upload"}

            def upload_part(self, **kwargs):
                return {"ETag": '"part"'}

            def complete_multipart_upload(self, **kwargs):
                return {"ETag": '"done-2"'}

        def pages():
            for start in range(0, 20_000, 500):
                yield invoices(500, start=start, payload=1000)

        part_size = 256 * 1024
        writer = S3DatasetWriter(
            DiscardingClient(), "bucket", "k{}".format, compression="none", part_size=part_size, allow_small_parts=True
        )
        tracemalloc.start()
        try:
            for page in pages():
                writer.write_records(page)
            writer.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        written = writer.files[0].bytes
        assert written > 20_000 * 1000
        # About one part plus one page (generated and serialised): far below the file's ~23 MB.
        assert peak < 8 * 1024 * 1024


class TestOptions:
    @pytest.mark.parametrize(
        ("file_format", "compression", "extension"),
        [
            ("jsonl", "gzip", ".jsonl.gz"),
            ("jsonl", "none", ".jsonl"),
            ("csv", "gzip", ".csv.gz"),
            ("csv", "none", ".csv"),
            ("parquet", "gzip", ".parquet"),
            ("parquet", "snappy", ".parquet"),
            ("parquet", "zstd", ".parquet"),
            ("parquet", "none", ".parquet"),
        ],
    )
    def test_file_extension(self, s3_client, file_format, compression, extension):
        assert file_extension(file_format, compression) == extension
        writer = S3DatasetWriter(s3_client, "b", str, file_format=file_format, compression=compression)
        assert writer.extension == extension

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"file_format": "xml"}, "File format 'xml' is not supported: choose one of jsonl, csv, parquet."),
            (
                {"compression": "snappy"},
                "Compression 'snappy' is not supported for jsonl: choose one of gzip, none.",
            ),
            ({"compression_level": 10}, "compression_level 10 must be 0-9 for gzip."),
            ({"max_file_size": 0}, "max_file_size 0 must be a positive number of bytes."),
            (
                {"part_size": 6 * 1024**3},
                "part_size 6442450944 must be between 1 and 5368709120 bytes (5 GiB).",
            ),
            (
                {"file_format": "parquet", "parquet_row_group_size": 0},
                "parquet_row_group_size 0 must be positive.",
            ),
            ({"columns": ["id"]}, "columns applies to csv and parquet only: JSON Lines keeps every key."),
            ({"file_format": "csv", "columns": ["id", "id"]}, "columns must be unique, got ['id', 'id']."),
            (
                {"file_format": "csv", "columns": ["id", "_extra"]},
                "columns must not include '_extra': the writer adds it.",
            ),
            ({"file_format": "csv", "columns": ["id", ""]}, "columns must be non-empty strings, got ['id', '']."),
        ],
    )
    def test_bad_options(self, s3_client, kwargs, message):
        with pytest.raises(CodatInputError, match=f"^{re.escape(message)}$"):
            S3DatasetWriter(s3_client, "b", str, **kwargs)

    def test_bad_parquet_level(self, s3_client):
        with pytest.raises(CodatInputError, match=r"^Parquet compression 'gzip' at level 42 is not available: "):
            S3DatasetWriter(s3_client, "b", str, file_format="parquet", compression_level=42)

    def test_one_record_is_not_a_page(self, s3_client, s3_bucket):
        writer = make_writer(s3_client, s3_bucket)
        with pytest.raises(
            CodatInputError,
            match=re.escape("write_records takes an iterable of records (dicts), not one record: wrap it in a list."),
        ):
            writer.write_records({"id": "1"})

    def test_bad_key_for_file(self, s3_client, s3_bucket):
        writer = S3DatasetWriter(s3_client, s3_bucket, lambda index: "")
        with pytest.raises(
            CodatInputError, match=re.escape("key_for_file(0) returned '': it must return a non-empty key.")
        ):
            writer.write_records(invoices(1))


class TestDeleteKeys:
    def test_deletes_in_batches(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "DELETE_BATCH_SIZE", 2)
        keys = [f"stale/part-{i}.jsonl.gz" for i in range(5)]
        for key in [*keys, "keep/manifest.json"]:
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
        counting = FaultyClient(s3_client)
        assert delete_keys(counting, s3_bucket, [*keys, keys[0], "stale/never-existed"]) == 6
        assert counting.calls["delete_objects"] == 3
        assert keys_in(s3_client, s3_bucket) == ["keep/manifest.json"]

    def test_nothing_to_delete(self, s3_client, s3_bucket):
        counting = FaultyClient(s3_client)
        assert delete_keys(counting, s3_bucket, iter([])) == 0
        assert counting.calls == {}

    def test_refused_keys_are_named(self, s3_client, s3_bucket, monkeypatch):
        monkeypatch.setattr(s3_writer, "DELETE_BATCH_SIZE", 3)

        class Refusing:
            meta = s3_client.meta

            def delete_objects(self, Bucket, Delete):  # noqa: N803 - boto3's parameter names
                return {
                    "Errors": [
                        {"Key": item["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
                        for item in Delete["Objects"]
                    ]
                }

        keys = [f"k{i}" for i in range(7)]
        with pytest.raises(S3WriteError) as raised:
            delete_keys(Refusing(), s3_bucket, keys)
        assert str(raised.value) == (
            f"Could not delete 7 of 7 objects from s3://{s3_bucket}: k0 (AccessDenied: Access Denied), "
            f"k1 (AccessDenied: Access Denied), k2 (AccessDenied: Access Denied), k3 (AccessDenied: Access "
            f"Denied), k4 (AccessDenied: Access Denied), and 2 more."
        )
        assert raised.value.error_code == "AccessDenied"

    def test_failed_request(self, s3_client):
        with pytest.raises(S3WriteError) as raised:
            delete_keys(s3_client, "no-such-bucket-here", ["a", "b"])
        assert str(raised.value) == (
            "Could not delete objects from s3://no-such-bucket-here: delete_objects (2 keys, from 'a') failed "
            "with S3 error NoSuchBucket: The specified bucket does not exist."
        )


class TestPutJson:
    def test_writes_readable_json_with_headers(self, s3_client, s3_bucket):
        manifest = {"status": "complete", "files": [{"key": "a", "records": 2}], "at": datetime(2024, 1, 1, tzinfo=UTC)}
        put_json(s3_client, s3_bucket, "m/manifest.json", manifest, {"ServerSideEncryption": "AES256"})
        stored = read(s3_client, s3_bucket, "m/manifest.json")
        assert json.loads(stored) == {
            "status": "complete",
            "files": [{"key": "a", "records": 2}],
            "at": "2024-01-01T00:00:00Z",
        }
        assert stored.startswith(b'{\n  "status": "complete",') and stored.endswith(b"}\n")
        head = s3_client.head_object(Bucket=s3_bucket, Key="m/manifest.json")
        assert (head["ContentType"], head["ServerSideEncryption"]) == ("application/json", "AES256")

    def test_failure(self, s3_client, s3_bucket):
        failing = FaultyClient(s3_client, put_object=[client_error("AccessDenied", 403, "Access Denied.", "PutObject")])
        with pytest.raises(S3WriteError) as raised:
            put_json(failing, s3_bucket, "m/manifest.json", {})
        assert str(raised.value) == (
            f"Could not write s3://{s3_bucket}/m/manifest.json: put_object failed with S3 error AccessDenied: "
            f"Access Denied."
        )
        assert (raised.value.bucket, raised.value.key) == (s3_bucket, "m/manifest.json")

    def test_bad_extra_args(self, s3_client, s3_bucket):
        with pytest.raises(CodatInputError, match=re.escape("extra_args must not set 'Body': the writer sets it.")):
            put_json(s3_client, s3_bucket, "m.json", {}, {"Body": b"x"})
