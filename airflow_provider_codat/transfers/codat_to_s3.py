"""This module contains an operator that streams one Codat dataset (a company and a data type) into S3."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_codat import __version__
from airflow_provider_codat.data_types import DataType, Scope, get_data_type
from airflow_provider_codat.exceptions import CodatBadRequestError, CodatDataUnavailableError, CodatInputError
from airflow_provider_codat.hooks.codat import CodatHook, Page, validate_id
from airflow_provider_codat.query import combine, window
from airflow_provider_codat.s3_writer import (
    EXTRA_COLUMN,
    S3DatasetWriter,
    S3WriteError,
    delete_keys,
    file_extension,
    put_json,
)
from airflow_provider_codat.windows import Window, iso, resolve_window, to_utc_datetime

if TYPE_CHECKING:
    from airflow.sdk import Context

FILE_FORMATS = ("jsonl", "csv", "parquet")
#: ``gzip`` or ``none`` for every format; parquet compresses inside the file and also takes ``snappy`` or ``zstd``.
COMPRESSIONS = ("gzip", "none", "snappy", "zstd")
MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
#: The XCom key under which every run, skipped ones included, leaves its summary.
SUMMARY_XCOM_KEY = "codat_summary"
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]+")


class CodatToS3Operator(BaseOperator):
    """
    Stream one Codat dataset (a company and a data type, over a time window) into Amazon S3.

    Records flow page by page from :class:`~airflow_provider_codat.hooks.codat.CodatHook` into S3
    multipart uploads, so memory stays flat whatever the dataset's size. Files land under one
    deterministic folder per window::

        {s3_prefix}/{data_type}/company_id={company_id}/window_start=20240304T000000Z/window_end=20240305T000000Z/
            attempt={run_id}.{try}/part-00000.jsonl.gz
            _manifest.json

    The manifest is written last, in one PUT: a window's data is complete if and only if its
    manifest exists, and the manifest lists exactly the files of the attempt that wrote it. Files
    of earlier attempts of the same window are deleted only after the new manifest is in place, so
    a reader never sees a window without a complete dataset behind its manifest.

    A data type that Codat has not synced for the company (409), that its platform does not
    support (404) or that needs a connection the company lacks ends the task *skipped*, with a
    manifest whose ``status`` says why, unless ``skip_when_unavailable`` is off.

    .. seealso::
        The README's "S3 layout and manifest" and "Windows" sections.

    :param company_id: the Codat company id (templated).
    :param data_type: the Codat data type name, e.g. ``invoices`` or ``bankAccounts`` (templated).
    :param s3_bucket: the destination bucket (templated).
    :param s3_prefix: the key prefix under which datasets land (templated).
    :param codat_conn_id: the Airflow connection of type ``codat``.
    :param aws_conn_id: the Airflow AWS connection for S3.
    :param connection_id: read only this Codat connection (connection-scoped types); default: every
        connection of the right source type.
    :param query: an extra Codat query ANDed with the window, e.g. ``currency=GBP`` (templated).
    :param window_start: the window start (templated); default: the run's data interval start.
    :param window_end: the window end, exclusive (templated); default: the run's data interval end.
    :param lookback: how far before ``window_start`` to read too, because ``modifiedDate`` is when
        Codat cached a change, which can lag the change itself. Records in the overlap appear in
        two windows; deduplicate on (company, id, modifiedDate).
    :param full_refresh: read every record regardless of the window.
    :param file_format: ``jsonl`` (default), ``csv`` or ``parquet`` (needs the ``parquet`` extra).
    :param compression: ``gzip`` (default) or ``none``; for parquet, the codec inside the file
        (``gzip``, ``snappy``, ``zstd`` or ``none``), never a gzip wrapper around it.
    :param compression_level: gzip level (0-9) for jsonl and csv, or the Parquet codec's level;
        default the writer's (2 for gzip: measured fastest per byte saved, see ``bench/RESULTS.md``).
    :param max_file_size: bytes written to one file before rolling to the next part.
    :param encrypt: server-side encryption with S3-managed keys (SSE-S3, ``AES256``).
    :param sse_kms_key_id: server-side encryption with this KMS key (SSE-KMS).
    :param skip_when_unavailable: end the task skipped (default) rather than failed when Codat
        has no data for the company and data type (not synced, not supported, no connection).
    :param hook_params: keyword overrides for the hook, e.g. ``{"page_size": 500, "concurrency": 4}``.
    :param report_params: query parameters for financial reports (``periodLength``, ``periodsToCompare``,
        ``startMonth``); Codat requires the first two, which default to a year of monthly periods.
    """

    template_fields: Sequence[str] = (
        "company_id",
        "data_type",
        "s3_bucket",
        "s3_prefix",
        "query",
        "window_start",
        "window_end",
    )
    template_fields_renderers = {"query": "py"}
    ui_color = "#e7f0ff"

    def __init__(
        self,
        *,
        company_id: str,
        data_type: str,
        s3_bucket: str,
        s3_prefix: str = "codat",
        codat_conn_id: str = CodatHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        connection_id: str | None = None,
        query: str | None = None,
        window_start: datetime | str | None = None,
        window_end: datetime | str | None = None,
        lookback: timedelta = timedelta(0),
        full_refresh: bool = False,
        file_format: str = "jsonl",
        compression: str = "gzip",
        compression_level: int | None = None,
        max_file_size: int = 256 * 1024 * 1024,
        encrypt: bool = False,
        sse_kms_key_id: str | None = None,
        skip_when_unavailable: bool = True,
        hook_params: dict[str, Any] | None = None,
        report_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.company_id = company_id
        self.data_type = data_type
        self.s3_bucket = s3_bucket
        self.s3_prefix = s3_prefix
        self.codat_conn_id = codat_conn_id
        self.aws_conn_id = aws_conn_id
        self.connection_id = connection_id
        self.query = query
        self.window_start = window_start
        self.window_end = window_end
        self.lookback = lookback
        self.full_refresh = full_refresh
        self.file_format = file_format
        self.compression = compression
        self.compression_level = compression_level
        self.max_file_size = max_file_size
        self.encrypt = encrypt
        self.sse_kms_key_id = sse_kms_key_id
        self.skip_when_unavailable = skip_when_unavailable
        self.hook_params = hook_params or {}
        self.report_params = report_params or {}
        self._lineage: tuple[str, str, str] | None = None
        _check_static_options(self)

    @cached_property
    def hook(self) -> CodatHook:
        """The Codat hook."""
        return CodatHook(self.codat_conn_id, **self.hook_params)

    @cached_property
    def s3_client(self):
        """The boto3 S3 client of the Amazon provider's S3Hook."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def execute(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        data_type = get_data_type(self.data_type)
        company_id = validate_id(self.company_id, "company id")
        connection_id = validate_id(self.connection_id, "connection id") if self.connection_id else None
        win = self.resolve_window(context, data_type)
        self._wait_for_window_end(win)
        query = self._query_for(data_type, win)
        folder = self._dataset_folder(data_type, company_id, connection_id, win)
        attempt = _attempt_segment(context)
        self.hook.settings  # noqa: B018 - validate the Codat connection before touching S3
        self._check_bucket()
        self.log.info(
            "Reading Codat %s for company %s, %s window %s",
            data_type.name,
            company_id,
            win.kind,
            win.as_dict(),
        )

        columns = table_columns(data_type) if self.file_format != "jsonl" else None
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "status": "complete",
            "company_id": company_id,
            "data_type": data_type.name,
            "data_type_key": data_type.key,
            "window": win.as_dict(),
            "query": query,
            "connection_ids": [],
            "file_format": self.file_format,
            "compression": self.compression,
            **({"columns": [*columns, EXTRA_COLUMN]} if columns else {}),
            "provider_version": __version__,
            "run_id": context["run_id"],
            "attempt": attempt,
        }
        try:
            pages = self._read_pages(data_type, company_id, connection_id, query, win, manifest)
            files, connection_ids = self._transfer(pages, f"{folder}/{attempt}", columns, manifest)
        except CodatDataUnavailableError as err:
            manifest.update(status="skipped", reason=err.reason, message=str(err), files=[], records=0)
            summary = self._publish_skip(folder, manifest, started)
            summary["reason"] = err.reason
            context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=summary)
            if self.skip_when_unavailable:
                raise AirflowSkipException(f"Skipped: {err}") from None
            raise
        manifest.update(connection_ids=connection_ids, files=[self._file_entry(f) for f in files])
        manifest["records"] = sum(f.records for f in files)
        summary = self._publish(folder, attempt, manifest, started)
        context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=summary)
        self.log.info(
            "Wrote %d %s records for company %s in %d file(s); manifest %s",
            summary["records"], data_type.name, company_id, len(files), summary["manifest"],
        )  # fmt: skip
        return summary

    # -- steps ----------------------------------------------------------------------------

    def resolve_window(self, context: Context, data_type: DataType) -> Window:
        """Decide what this run reads (see :func:`airflow_provider_codat.windows.resolve_window`)."""
        return resolve_window(
            data_type,
            window_start=self.window_start,
            window_end=self.window_end,
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            run_moment=_run_moment(context),
            lookback=self.lookback,
            full_refresh=self.full_refresh,
        )

    def _wait_for_window_end(self, win: Window) -> None:
        """
        A window may end a little past now (within the clock-skew tolerance): read it only once its end
        has passed, or records Codat stamps between now and then would belong to it and never be read.
        """
        if win.kind != "incremental":
            return
        wait = (win.end - datetime.now(UTC)).total_seconds()
        if wait > 0:
            self.log.info(
                "The window ends at %s, %.1f s from now: waiting for it to pass before reading.", iso(win.end), wait
            )
            time.sleep(wait + 1)

    def _query_for(self, data_type: DataType, win: Window, whole_days: bool = False) -> str | None:
        if not data_type.incremental:
            if self.query:
                raise CodatInputError(f"{data_type.name!r} is a snapshot: it cannot be filtered with a query.")
            return None
        if win.kind != "incremental":
            return combine(self.query)
        start, end = win.whole_days() if whole_days else (win.query_start, win.end)
        return combine(window(start, end, field=data_type.cursor_field), self.query)

    def _read_pages(
        self,
        data_type: DataType,
        company_id: str,
        connection_id: str | None,
        query: str | None,
        win: Window,
        manifest: dict[str, Any],
    ) -> Iterator[Page]:
        """
        The pages to write, or the snapshot as one page.

        Codat's docs show only dates (``YYYY-MM-DD``) in queries; full timestamps work in practice but
        are unverified. If Codat rejects the timestamp window before any page was read, read whole
        days instead and keep only the records inside the window here; the manifest says so.
        """
        if not data_type.incremental:
            yield Page(records=[self.hook.get_snapshot(company_id, data_type, self.report_params)], page_number=1)
            return
        read_any = False
        try:
            for page in self.hook.iter_pages(company_id, data_type, connection_id=connection_id, query=query):
                read_any = True
                yield page
            return
        except CodatBadRequestError:
            if read_any or win.kind != "incremental":
                raise
        day_query = self._query_for(data_type, win, whole_days=True)
        self.log.warning(
            "Codat rejected timestamps in the query; reading whole days (%s) and keeping only records in the window",
            day_query,
        )
        manifest.update(query=day_query, window_filtered_client_side=True)
        for page in self.hook.iter_pages(company_id, data_type, connection_id=connection_id, query=day_query):
            page.records = [r for r in page.records if win.contains(r.get(data_type.cursor_field))]
            yield page

    def _dataset_folder(self, data_type: DataType, company_id: str, connection_id: str | None, win: Window) -> str:
        """
        One folder per dataset. A task reading one connection, or with its own ``query``, reads a
        different dataset from one reading them all: each gets a folder of its own, or the second
        task's rerun logic would replace the first one's files.
        """
        scope = f"connection_id={connection_id}/" if connection_id else ""
        if self.query:
            scope += f"query={hashlib.sha256(combine(self.query).encode()).hexdigest()[:12]}/"
        return f"{_clean_prefix(self.s3_prefix)}{data_type.name}/company_id={company_id}/{scope}{win.partition()}"

    def _check_bucket(self) -> None:
        """Fail before any Codat call if the bucket is missing or not ours to write."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3_client.head_bucket(Bucket=self.s3_bucket)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                why = "does not exist: create it, or fix s3_bucket"
            elif code in ("403", "AccessDenied"):
                why = (
                    f"is not accessible with AWS connection {self.aws_conn_id!r} (access denied): grant it "
                    "s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucketMultipartUploads "
                    "and s3:AbortMultipartUpload (and kms:GenerateDataKey and kms:Decrypt on the key, for SSE-KMS)"
                )
            else:
                why = f"cannot be reached ({code or err})"
            raise CodatInputError(f"S3 bucket {self.s3_bucket!r} {why}. Nothing was read from Codat.") from None
        except BotoCoreError as err:
            raise CodatInputError(
                f"S3 bucket {self.s3_bucket!r} cannot be reached with AWS connection {self.aws_conn_id!r}: {err}. "
                "Nothing was read from Codat."
            ) from None

    def _transfer(
        self, pages: Iterator[Page], folder: str, columns: tuple[str, ...] | None, manifest: dict
    ) -> tuple[list, list[str]]:
        extension = file_extension(self.file_format, self.compression)
        writer = S3DatasetWriter(
            self.s3_client,
            self.s3_bucket,
            lambda index: f"{folder}/part-{index:05d}{extension}",
            file_format=self.file_format,
            compression=self.compression,
            max_file_size=self.max_file_size,
            compression_level=self.compression_level,
            columns=columns,
            extra_args=self._sse_args(),
        )
        connection_ids: list[str] = []
        try:
            for page in pages:
                if page.unavailable:  # a connection without this data, while others had it
                    manifest.setdefault("unavailable_connections", []).append(
                        {"connection_id": page.connection_id, "reason": page.unavailable}
                    )
                    continue
                if page.connection_id:
                    if page.connection_id not in connection_ids:
                        connection_ids.append(page.connection_id)
                    _annotate(page)
                writer.write_records(page.records)
            files = writer.close()
        except BaseException:
            writer.abort()
            _delete_quietly(self, [f.key for f in writer.files])
            raise
        return files, connection_ids

    def _publish(self, folder: str, attempt: str, manifest: dict, started: float) -> dict[str, Any]:
        """Write the manifest (the commit point), then remove what earlier attempts left behind."""
        manifest_key = f"{folder}/{MANIFEST_NAME}"
        put_json(
            self.s3_client, self.s3_bucket, manifest_key, self._finish(manifest, started), extra_args=self._sse_args()
        )
        self._remove_stale(folder, attempt)
        return self._summary(folder, manifest)

    def _publish_skip(self, folder: str, manifest: dict, started: float) -> dict[str, Any]:
        """
        Record a skip, without ever replacing data: a skip says Codat has nothing to give *now* (a
        connection unlinked since, a sync under way), not that the window's data is wrong. So a
        complete dataset already in the folder stays, manifest and files; otherwise the skipped
        manifest is written, and nothing is deleted either way.
        """
        manifest_key = f"{folder}/{MANIFEST_NAME}"
        existing = self._read_manifest(manifest_key)
        if existing is not None and existing.get("status") == "complete":
            self.log.warning(
                "Codat has no %s for company %s now (%s), but this window already holds a complete dataset "
                "(%d records, written %s by %s): it stays; a skip never replaces data.",
                manifest["data_type"], manifest["company_id"], manifest["reason"], existing.get("records", 0),
                existing.get("written_at"), existing.get("attempt"),
            )  # fmt: skip
            self._finish(manifest, started)
            return {**self._summary(folder, manifest), "kept_complete_dataset": True}
        put_json(
            self.s3_client, self.s3_bucket, manifest_key, self._finish(manifest, started), extra_args=self._sse_args()
        )
        return self._summary(folder, manifest)

    def _read_manifest(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            body = self.s3_client.get_object(Bucket=self.s3_bucket, Key=key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return json.loads(body)

    def _finish(self, manifest: dict, started: float) -> dict:
        stats = dict(self.hook.stats)
        manifest.update(
            requests=stats["requests"],
            retries=stats["retries"],
            rate_limited=stats["rate_limited"],
            written_at=iso(datetime.now(UTC)),
            duration_seconds=round(time.monotonic() - started, 3),
        )
        return manifest

    def _summary(self, folder: str, manifest: dict) -> dict[str, Any]:
        manifest_key = f"{folder}/{MANIFEST_NAME}"
        self._lineage = (manifest["company_id"], manifest["data_type"], folder)
        return {
            "status": manifest["status"],
            "company_id": manifest["company_id"],
            "data_type": manifest["data_type"],
            "window": manifest["window"],
            "records": manifest["records"],
            "files": [f["uri"] for f in manifest["files"]],
            "manifest": f"s3://{self.s3_bucket}/{manifest_key}",
            "requests": manifest["requests"],
            "retries": manifest["retries"],
            "duration_seconds": manifest["duration_seconds"],
        }

    def _remove_stale(self, folder: str, attempt: str) -> None:
        """
        Delete what other attempts of this window left: files, and multipart uploads that a killed
        worker never completed or aborted (they hold storage and would otherwise linger).

        Best effort: the new manifest is already written and lists only this attempt's files, so
        leftovers cannot be mistaken for data; failing the task here would only make its retry read
        everything again and fail the same way. The next successful run of the window tries again.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._delete_other_attempts(folder, attempt)
        except (BotoCoreError, ClientError, S3WriteError) as err:
            self.log.warning(
                "The dataset is complete (its manifest is written), but removing what earlier attempts of "
                "this window left failed: %s. Grant the AWS connection s3:DeleteObject, "
                "s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the bucket; the next successful "
                "run of this window removes them.",
                err,
            )

    def _delete_other_attempts(self, folder: str, attempt: str) -> None:
        from botocore.exceptions import ClientError

        keep_prefix = f"{folder}/{attempt}/"
        manifest_key = f"{folder}/{MANIFEST_NAME}"
        stale: list[str] = []
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=self.s3_bucket, Prefix=f"{folder}/"
        ):
            for obj in page.get("Contents", []):
                if obj["Key"] != manifest_key and not obj["Key"].startswith(keep_prefix):
                    stale.append(obj["Key"])
        if stale:
            self.log.info("Removing %d object(s) left by earlier attempts of this window", len(stale))
            delete_keys(self.s3_client, self.s3_bucket, stale)
        for page in self.s3_client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.s3_bucket, Prefix=f"{folder}/"
        ):
            for upload in page.get("Uploads", []):
                if not upload["Key"].startswith(keep_prefix):
                    self.log.info("Aborting an unfinished upload of an earlier attempt: %s", upload["Key"])
                    try:
                        self.s3_client.abort_multipart_upload(
                            Bucket=self.s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as err:  # completed or aborted meanwhile: nothing left to do
                        if err.response.get("Error", {}).get("Code") != "NoSuchUpload":
                            raise

    def _file_entry(self, written) -> dict[str, Any]:
        return {
            "key": written.key,
            "uri": f"s3://{self.s3_bucket}/{written.key}",
            "records": written.records,
            "bytes": written.bytes,
            "sha256": written.sha256,
        }

    def _sse_args(self) -> dict[str, str]:
        if self.sse_kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.sse_kms_key_id}
        if self.encrypt:
            return {"ServerSideEncryption": "AES256"}
        return {}

    # -- lineage -------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance):
        """Input: the Codat dataset of the company and data type. Output: the window's S3 folder."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        if self._lineage is None:
            return OperatorLineage()
        company_id, data_type, folder = self._lineage
        return OperatorLineage(
            inputs=[Dataset(namespace=self.hook.settings.base_url, name=f"companies/{company_id}/data/{data_type}")],
            outputs=[Dataset(namespace=f"s3://{self.s3_bucket}", name=folder)],
        )


def codat_s3_asset(s3_bucket: str, data_type: str, s3_prefix: str = "codat"):
    """
    The Airflow Asset for one data type's S3 location, for data-aware scheduling.

    Add it to the extracting task's ``outlets`` and to a consumer DAG's ``schedule``.

    :param s3_bucket: the bucket the operator writes to.
    :param data_type: the data type name.
    :param s3_prefix: the operator's ``s3_prefix``.
    """
    from airflow.sdk import Asset

    name = get_data_type(data_type).name
    return Asset(uri=f"s3://{s3_bucket}/{_clean_prefix(s3_prefix)}{name}/", name=f"codat_{name}")


def _check_static_options(op: CodatToS3Operator) -> None:
    """Validate the options that are not templated, at DAG parse time."""
    if op.file_format not in FILE_FORMATS:
        raise CodatInputError(f"file_format={op.file_format!r} is not supported: use one of {', '.join(FILE_FORMATS)}.")
    allowed = COMPRESSIONS if op.file_format == "parquet" else ("gzip", "none")
    if op.compression not in allowed:
        raise CodatInputError(
            f"compression={op.compression!r} is not supported for {op.file_format}: use one of {', '.join(allowed)}."
        )
    if not isinstance(op.lookback, timedelta) or op.lookback < timedelta(0):
        raise CodatInputError(f"lookback={op.lookback!r} must be a timedelta of zero or more.")
    if op.encrypt and op.sse_kms_key_id:
        raise CodatInputError("Set either encrypt (SSE-S3) or sse_kms_key_id (SSE-KMS), not both.")
    if not isinstance(op.max_file_size, int) or op.max_file_size < 1024 * 1024:
        raise CodatInputError(f"max_file_size={op.max_file_size!r} must be at least 1 MiB (1048576 bytes).")


#: The fields :func:`_annotate` adds to connection-scoped records, and to bank-account-scoped ones.
CONNECTION_FIELD, BANK_ACCOUNT_FIELD = "_connectionId", "_bankAccountId"


def table_columns(data_type: DataType) -> tuple[str, ...] | None:
    """
    The CSV/Parquet columns of ``data_type``'s files (before the writer's ``_extra``), or ``None``.

    The fields of Codat's record schema, plus the fields :func:`_annotate` adds, sorted: the same
    for every page, file and run of the data type, whatever the records of one window carry.
    Fields outside the schema are kept in ``_extra``. ``None`` (no schema in Codat's specs) lets the
    writer take the columns from a sample of the records.
    """
    if data_type.fields is None:
        return None
    added = {Scope.CONNECTION: (CONNECTION_FIELD,), Scope.BANK_ACCOUNT: (CONNECTION_FIELD, BANK_ACCOUNT_FIELD)}
    return tuple(sorted({*data_type.fields, *added.get(data_type.scope, ())}))


def _annotate(page) -> None:
    """Tag connection-scoped records with where they came from: ids are unique per connection only."""
    extra = {CONNECTION_FIELD: page.connection_id}
    if page.bank_account_id:
        extra[BANK_ACCOUNT_FIELD] = page.bank_account_id
    for record in page.records:
        record.update(extra)


def _delete_quietly(op: CodatToS3Operator, keys: list[str]) -> None:
    if not keys:
        return
    try:
        delete_keys(op.s3_client, op.s3_bucket, keys)
    except Exception as err:  # the original failure matters more; leftovers are removed by the next success
        op.log.warning("Could not remove %d file(s) of the failed attempt: %s", len(keys), err)


def _clean_prefix(prefix: str | None) -> str:
    """``codat`` -> ``codat/``; refuses segments that would climb out of the prefix."""
    text = (prefix or "").strip().strip("/")
    if not text:
        return ""
    segments = text.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise CodatInputError(
            f"s3_prefix {prefix!r} has an empty, '.' or '..' segment: use a plain path like 'raw/codat'."
        )
    return text + "/"


def _attempt_segment(context: Context) -> str:
    ti = context["ti"]
    run_id = _SAFE_SEGMENT.sub("_", str(context["run_id"])).strip("_")
    map_index = getattr(ti, "map_index", -1)
    suffix = f".m{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"attempt={run_id}.try{getattr(ti, 'try_number', 1)}{suffix}"


def _run_moment(context: Context) -> datetime:
    """When the run was asked for: the fallback window end of a run with no data interval."""
    dag_run = context.get("dag_run")
    for attr in ("run_after", "queued_at", "start_date"):
        value = getattr(dag_run, attr, None) if dag_run is not None else None
        if value is not None:
            return to_utc_datetime(value, attr).replace(microsecond=0)
    return datetime.now(UTC).replace(microsecond=0)


__all__ = ["CodatToS3Operator", "codat_s3_asset"]
