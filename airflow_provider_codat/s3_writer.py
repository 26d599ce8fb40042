"""Stream records (dicts) into S3 as JSON Lines, CSV or Parquet files, in constant memory.

:class:`S3DatasetWriter` serialises each batch of records once, compresses it, and sends the bytes
with S3's multipart upload API as soon as a part's worth has built up: memory holds at most about one
part (``part_size``), the compressor's state and, for Parquet, one row group, whatever the size of
the dataset. A file shorter than one part goes up in a single ``PutObject``. When a file's stored
size reaches ``max_file_size`` it is completed and the next record starts a new file; the caller
names files with ``key_for_file(index)``, so key layout stays the caller's business.

Formats and compression
-----------------------
=========  ================================  =================================================
format     ``compression``                   file
=========  ================================  =================================================
jsonl      ``gzip`` (default), ``none``      ``.jsonl.gz`` / ``.jsonl``: one JSON object a line
csv        ``gzip``, ``none``                ``.csv.gz`` / ``.csv``: header row, ``\\n`` line ends
parquet    ``gzip``, ``snappy``, ``zstd``,   ``.parquet``: the codec is Parquet's own, applied
           ``none``                          inside the file; a Parquet file is never wrapped in
                                             gzip, since no Parquet reader could open it
=========  ================================  =================================================

gzip output is a single gzip member (``gzip``, ``zcat`` and every data tool read it), written with
ISA-L's deflate (the ``isal`` package) at levels 1-3 when it is installed, else with ``zlib``.
``compression_level`` applies to gzip (0-9) and zstd. Its default for gzipped JSON Lines and CSV
is 2 (``DEFAULT_GZIP_LEVEL``): measured on Codat invoices (``bench/RESULTS.md``), zlib's usual 6
spent 17 us of CPU per record, more than parsing the record, and cut the extraction's throughput by
a quarter, for files a quarter smaller than level 2 makes. Parquet's codecs keep level 6 by
default. Objects get a ``ContentType``
(``application/gzip`` for ``.gz`` files) but no ``ContentEncoding``: with ``Content-Encoding: gzip``
HTTP clients would unzip the file on download, and its bytes would no longer match the manifest's
checksum. Both can be overridden with ``extra_args``.

CSV and Parquet schema
----------------------
Records are JSON objects whose keys vary, but a table needs one schema for every page, row group
and file of a dataset. The columns are the sorted top-level keys of the first
``SCHEMA_SAMPLE_RECORDS`` records of the dataset (or the ``columns`` given), followed by ``_extra``.
They are decided once per writer and shared by every file it rolls into. ``_extra`` holds a JSON
object of any top-level keys of a record that are not columns, and is empty (CSV) or null (Parquet)
when there are none. Every column is a string: strings as they are; numbers and booleans as their
JSON text (``240``, ``1.5``, ``true``); objects and arrays as compact JSON; null, or a missing key,
as empty (CSV) or null (Parquet). CSV cannot tell null from an empty string: use JSON Lines or
Parquet where that matters.

Failures
--------
A part upload (or single PUT) that fails with a transient error (5xx, throttling, timeouts, broken
connections) is retried ``UPLOAD_ATTEMPTS`` times in all, on top of botocore's own retries. Any
error while a file is open aborts its multipart upload, so S3 keeps no invisible parts, and is raised
as :class:`S3WriteError` naming the bucket, key and S3 error code. Files completed before the error
stay in S3: the caller's manifest decides what a dataset is. As a safety net for crashes that skip
the abort (a killed worker), give the bucket an ``AbortIncompleteMultipartUpload`` lifecycle rule.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import islice
from typing import Any

import msgspec
import tenacity

from airflow_provider_codat.exceptions import CodatError, CodatInputError

try:  # optional: ISA-L's deflate, see _gzip_compressor
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None

__all__ = [
    "EXTRA_COLUMN",
    "S3DatasetWriter",
    "S3WriteError",
    "WrittenFile",
    "delete_keys",
    "file_extension",
    "put_json",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: S3's smallest allowed part, except for the last part of an upload.
MIN_PART_SIZE = 5 * MiB
#: S3's largest allowed part.
MAX_PART_SIZE = 5 * 1024 * MiB
#: S3's limit on the number of parts of one upload.
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_FILE_SIZE = 256 * MiB
DEFAULT_PARQUET_ROW_GROUP_SIZE = 10_000
#: The default gzip level of JSON Lines and CSV files; see the module documentation.
DEFAULT_GZIP_LEVEL = 2
#: The default level of Parquet's gzip and zstd codecs.
DEFAULT_PARQUET_LEVEL = 6
#: How many records decide the CSV/Parquet columns when none are given.
SCHEMA_SAMPLE_RECORDS = 1000
#: The column holding a JSON object of the keys that are not columns.
EXTRA_COLUMN = "_extra"
#: Attempts, in all, for a part upload or a single PUT that fails with a transient error.
UPLOAD_ATTEMPTS = 3
#: The wait before the second attempt; it doubles for each further attempt.
UPLOAD_RETRY_WAIT_SECONDS = 0.5
#: S3's DeleteObjects limit.
DELETE_BATCH_SIZE = 1000

FILE_FORMATS = ("jsonl", "csv", "parquet")
COMPRESSIONS = {
    "jsonl": ("gzip", "none"),
    "csv": ("gzip", "none"),
    "parquet": ("gzip", "snappy", "zstd", "none"),
}

# Records are taken from the caller's iterable this many at a time, so a caller passing one
# generator over a whole dataset still gets bounded memory and timely file rolling.
_CHUNK_RECORDS = 1000

# Error codes S3 uses for conditions that pass; HTTP 5xx, 408 and 429 are retried whatever the code.
_TRANSIENT_ERROR_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"}
)

# Request parameters the writer sets itself; extra_args may not override them.
_WRITER_PARAMETERS = frozenset(
    {"Bucket", "Key", "Body", "UploadId", "PartNumber", "MultipartUpload", "ContentLength", "ContentMD5"}
)


class S3WriteError(CodatError):
    """
    Writing to S3 failed; nothing half-written is left visible.

    :param bucket: the bucket written to.
    :param key: the object key, when one object was concerned.
    :param error_code: S3's error code (``AccessDenied``), or botocore's error class name for
        errors without an answer from S3 (``EndpointConnectionError``).
    """

    def __init__(
        self, message: str, *, bucket: str | None = None, key: str | None = None, error_code: str | None = None
    ):
        super().__init__(message)
        self.bucket = bucket
        self.key = key
        self.error_code = error_code


@dataclass(frozen=True)
class WrittenFile:
    """
    One completed S3 object.

    :param key: the object key.
    :param records: the records in the file.
    :param bytes: the object's size as stored (compressed).
    :param sha256: hex SHA-256 of the object's bytes as stored.
    :param parts: the multipart parts it was uploaded in; 1 for a single PUT.
    :param etag: the ETag S3 gave the object (``"<md5>-<parts>"`` for multipart uploads).
    """

    key: str
    records: int
    bytes: int
    sha256: str
    parts: int
    etag: str


def file_extension(file_format: str, compression: str) -> str:
    """
    The file name extension for a format and compression, e.g. ``.jsonl.gz``.

    :param file_format: ``jsonl``, ``csv`` or ``parquet``.
    :param compression: one of :data:`COMPRESSIONS` for the format.
    """
    _check_format(file_format, compression)
    if file_format == "parquet":
        return ".parquet"
    return f".{file_format}.gz" if compression == "gzip" else f".{file_format}"


def _check_format(file_format: str, compression: str) -> None:
    if file_format not in FILE_FORMATS:
        raise CodatInputError(f"File format {file_format!r} is not supported: choose one of {', '.join(FILE_FORMATS)}.")
    if compression not in COMPRESSIONS[file_format]:
        raise CodatInputError(
            f"Compression {compression!r} is not supported for {file_format}: choose one of "
            f"{', '.join(COMPRESSIONS[file_format])}."
        )


def _default_content_type(file_format: str, compression: str) -> str:
    if file_format == "parquet":
        return "application/vnd.apache.parquet"
    if compression == "gzip":
        return "application/gzip"
    return "application/x-ndjson" if file_format == "jsonl" else "text/csv; charset=utf-8"


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise CodatInputError(
            "Parquet output needs pyarrow, which is not installed: pip install 'airflow-provider-codat[parquet]'."
        ) from exc
    return pyarrow, pyarrow.parquet


class _OpenFile:
    """The state of the file being written: its upload, its pending bytes and its checksum."""

    __slots__ = (
        "buffer",
        "compressor",
        "index",
        "key",
        "parquet_writer",
        "parts",
        "records",
        "sha256",
        "sink",
        "stored",
        "upload_id",
    )

    def __init__(self, index: int, key: str):
        self.index = index
        self.key = key
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        # Compressed bytes not uploaded yet: at most about one part.
        self.buffer = bytearray()
        self.stored = 0
        self.records = 0
        self.sha256 = hashlib.sha256()
        self.compressor: Any = None
        self.parquet_writer: Any = None
        self.sink: _ParquetSink | None = None


class _ParquetSink(io.RawIOBase):
    """A write-only file for pyarrow that hands each write to the multipart buffer."""

    def __init__(self, store: Callable[[bytes], None]):
        super().__init__()
        self._store = store
        #: Set when the upload is aborted, so closing the Parquet writer uploads nothing.
        self.discarding = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if not self.discarding:
            self._store(data)
        return size


class S3DatasetWriter:
    """
    Write a stream of records to one or more S3 objects, completing each with a multipart upload.

    Call :meth:`write_records` once per page of records, then :meth:`close`, which returns every
    file written. Used as a context manager, the writer closes on a normal exit and aborts on an
    exception. Not thread-safe: one writer per dataset and thread.

    .. code-block:: python

        writer = S3DatasetWriter(
            S3Hook(aws_conn_id).get_conn(),
            "my-bucket",
            lambda index: f"invoices/run=1/part-{index:05d}.jsonl.gz",
            extra_args={"ServerSideEncryption": "AES256"},
        )
        with writer:
            for page in pages:
                writer.write_records(page)
        files = writer.files

    :param client: a boto3 S3 client, e.g. ``S3Hook(aws_conn_id).get_conn()``.
    :param bucket: the bucket to write to.
    :param key_for_file: returns the key of file ``index`` (0, 1, 2, ...); keys must be unique.
        :attr:`extension` gives the extension to end them with.
    :param file_format: ``jsonl``, ``csv`` or ``parquet``; see the module documentation.
    :param compression: ``gzip`` or ``none``; for Parquet also ``snappy`` or ``zstd``, applied
        inside the Parquet file.
    :param compression_level: the gzip (0-9) or zstd level; higher is smaller and slower. Default:
        ``DEFAULT_GZIP_LEVEL`` (2) for JSON Lines and CSV, 6 for Parquet's codecs.
    :param part_size: a part is uploaded once this many stored (compressed) bytes have built up, so
        every part but the last is this size or a little larger (by at most one batch of records).
        At least S3's 5 MiB minimum.
    :param max_file_size: the stored (compressed) size at which a file is completed and the next
        one started. A file ends at the first batch boundary at or past it, so it can exceed it by
        up to one batch of records (one row group for Parquet).
    :param extra_args: S3 parameters for every object, e.g. ``{"ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": key_arn}``, ``ContentType``, ``Metadata``, ``StorageClass``. Each request
        gets those its operation accepts (SSE-C keys go to every part, for instance).
    :param columns: CSV/Parquet only: the columns, in order, instead of the sorted keys of the
        first records. ``_extra`` is added after them.
    :param parquet_row_group_size: records per Parquet row group.
    :param allow_small_parts: allow ``part_size`` below S3's minimum; only for tests against a
        server that accepts small parts.
    :raises CodatInputError: for an unsupported option, or Parquet without pyarrow installed.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        key_for_file: Callable[[int], str],
        *,
        file_format: str = "jsonl",
        compression: str = "gzip",
        compression_level: int | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        extra_args: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        parquet_row_group_size: int = DEFAULT_PARQUET_ROW_GROUP_SIZE,
        allow_small_parts: bool = False,
    ):
        _check_format(file_format, compression)
        if compression_level is None:
            compression_level = DEFAULT_PARQUET_LEVEL if file_format == "parquet" else DEFAULT_GZIP_LEVEL
        if not allow_small_parts and part_size < MIN_PART_SIZE:
            raise CodatInputError(
                f"part_size {part_size} is below S3's minimum part size of {MIN_PART_SIZE} bytes (5 MiB)."
            )
        if not 0 < part_size <= MAX_PART_SIZE:
            raise CodatInputError(f"part_size {part_size} must be between 1 and {MAX_PART_SIZE} bytes (5 GiB).")
        if max_file_size <= 0:
            raise CodatInputError(f"max_file_size {max_file_size} must be a positive number of bytes.")
        if max_file_size > part_size * (MAX_PARTS - 1):
            raise CodatInputError(
                f"max_file_size {max_file_size} would need more than S3's {MAX_PARTS} parts of "
                f"{part_size} bytes: raise part_size or lower max_file_size."
            )
        if parquet_row_group_size <= 0:
            raise CodatInputError(f"parquet_row_group_size {parquet_row_group_size} must be positive.")
        if file_format == "jsonl" and columns is not None:
            raise CodatInputError("columns applies to csv and parquet only: JSON Lines keeps every key.")

        self._client = client
        self.bucket = bucket
        self._key_for_file = key_for_file
        self.file_format = file_format
        self.compression = compression
        self._compression_level = compression_level
        self._part_size = part_size
        self._max_file_size = max_file_size
        self._row_group_size = parquet_row_group_size

        extra = {"ContentType": _default_content_type(file_format, compression), **(extra_args or {})}
        _check_extra_args(client, extra, ("CreateMultipartUpload", "PutObject"))
        self._put_args = _arguments_for(client, "PutObject", extra)
        self._create_args = _arguments_for(client, "CreateMultipartUpload", extra)
        self._part_args = _arguments_for(client, "UploadPart", extra)
        self._complete_args = _arguments_for(client, "CompleteMultipartUpload", extra)
        self._abort_args = _arguments_for(client, "AbortMultipartUpload", extra)
        # With a checksum algorithm, S3 wants each part's checksum back when completing.
        algorithm = extra.get("ChecksumAlgorithm")
        self._part_checksum_field = f"Checksum{algorithm.upper()}" if algorithm else None

        self._pa: Any = None
        self._pq: Any = None
        if file_format == "parquet":
            self._pa, self._pq = _import_pyarrow()
            self._parquet_level = compression_level if compression in ("gzip", "zstd") else None
            try:
                if compression != "none":
                    self._pa.Codec(compression, compression_level=self._parquet_level)
            except Exception as exc:  # pyarrow raises ValueError or OSError depending on the codec
                raise CodatInputError(
                    f"Parquet compression {compression!r} at level {compression_level} is not available: {exc}"
                ) from exc
        elif compression == "gzip" and compression_level not in range(10):
            raise CodatInputError(f"compression_level {compression_level!r} must be 0-9 for gzip.")

        self._json = msgspec.json.Encoder()
        self._columns: tuple[str, ...] | None = None
        self._column_set: frozenset[str] = frozenset()
        self._schema: Any = None
        if columns is not None:
            self._set_columns(_check_columns(columns))
        self._sample: list[dict] = []
        self._rows: list[list[str | None]] = []
        self._file: _OpenFile | None = None
        self._files: list[WrittenFile] = []
        self._keys: set[str] = set()
        self._records_written = 0
        self._state = "open"

    # -- public API -------------------------------------------------------------------------

    @property
    def extension(self) -> str:
        """The extension of the files this writer writes, e.g. ``.jsonl.gz``."""
        return file_extension(self.file_format, self.compression)

    @property
    def files(self) -> tuple[WrittenFile, ...]:
        """The files completed so far, in order."""
        return tuple(self._files)

    @property
    def records_written(self) -> int:
        """Records accepted by :meth:`write_records` so far."""
        return self._records_written

    def write_records(self, records: Iterable[dict]) -> None:
        """
        Serialise, compress and (once a part's worth has built up) upload records.

        :param records: JSON objects as dicts, typically one page from the source API.
        :raises S3WriteError: if S3 fails; the open upload has been aborted.
        """
        self._check_open()
        if isinstance(records, dict):
            raise CodatInputError(
                "write_records takes an iterable of records (dicts), not one record: wrap it in a list."
            )
        try:
            iterator = iter(records)
            while chunk := list(islice(iterator, _CHUNK_RECORDS)):
                self._records_written += len(chunk)
                if self._columns is None and self.file_format != "jsonl":
                    # The columns are decided on a sample, held until it is large enough.
                    self._sample.extend(chunk)
                    if len(self._sample) < SCHEMA_SAMPLE_RECORDS:
                        continue
                    chunk = self._take_sample()
                self._write_chunk(chunk)
        except BaseException:
            self.abort()
            raise

    def close(self) -> list[WrittenFile]:
        """
        Complete the last file and return every file written. Calling it again returns the same.

        A writer that was given no records writes no file and returns an empty list.

        :raises S3WriteError: if S3 fails; the open upload has been aborted.
        """
        if self._state == "closed":
            return list(self._files)
        self._check_open()
        try:
            if self._sample:
                self._write_chunk(self._take_sample())
            if self._rows:
                self._flush_row_group()
            if self._file is not None:
                self._finish_file()
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return list(self._files)

    def abort(self) -> None:
        """
        Abort the open multipart upload, if any, and stop the writer. Safe to call more than once.

        Completed files are left as they are.
        """
        if self._state != "open":
            return
        self._state = "aborted"
        self._sample = []
        self._rows = []
        self._abort_open_file()

    def __enter__(self) -> S3DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- records to bytes -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise S3WriteError(
                f"This S3 writer for s3://{self.bucket} was {self._state}: start a new writer.",
                bucket=self.bucket,
            )

    def _take_sample(self) -> list[dict]:
        sample, self._sample = self._sample, []
        if self._columns is None:
            keys = set().union(*sample[:SCHEMA_SAMPLE_RECORDS])
            keys.discard(EXTRA_COLUMN)
            self._set_columns(tuple(sorted(keys)))
        return sample

    def _set_columns(self, columns: tuple[str, ...]) -> None:
        self._columns = columns
        self._column_set = frozenset(columns)
        if self._pa is not None:
            self._schema = self._pa.schema([(name, self._pa.string()) for name in (*columns, EXTRA_COLUMN)])

    def _write_chunk(self, records: list[dict]) -> None:
        if self.file_format == "jsonl":
            file = self._ensure_file()
            self._write_uncompressed(self._json.encode_lines(records))
            file.records += len(records)
            self._roll_if_full()
        elif self.file_format == "csv":
            file = self._ensure_file()
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(map(self._row, records))
            self._write_uncompressed(text.getvalue().encode())
            file.records += len(records)
            self._roll_if_full()
        else:
            rows = self._rows
            for record in records:
                rows.append(self._row(record))
                if len(rows) >= self._row_group_size:
                    self._flush_row_group()
                    rows = self._rows
                    self._roll_if_full()

    def _row(self, record: dict) -> list[str | None]:
        # Strings and nulls, by far the most common cells, skip the function call.
        row = [
            value if value is None or value.__class__ is str else _cell(value)
            for value in map(record.get, self._columns)
        ]
        extra_keys = record.keys() - self._column_set
        if extra_keys:
            extra = {key: value for key, value in record.items() if key in extra_keys}
            row.append(self._json.encode(extra).decode())
        else:
            row.append(None)
        return row

    def _flush_row_group(self) -> None:
        rows, self._rows = self._rows, []
        file = self._ensure_file()
        pa = self._pa
        arrays = [pa.array(column, type=pa.string()) for column in zip(*rows, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        file.parquet_writer.write_table(table, row_group_size=len(rows))
        file.records += len(rows)

    # -- bytes to S3 ------------------------------------------------------------------------

    def _ensure_file(self) -> _OpenFile:
        if self._file is not None:
            return self._file
        index = len(self._files)
        key = self._key_for_file(index)
        if not isinstance(key, str) or not key:
            raise CodatInputError(f"key_for_file({index}) returned {key!r}: it must return a non-empty key.")
        if key in self._keys:
            raise CodatInputError(
                f"key_for_file({index}) returned {key!r}, the key of an earlier file: keys must be unique "
                f"(include the index)."
            )
        self._keys.add(key)
        file = self._file = _OpenFile(index, key)
        if self.file_format == "parquet":
            file.sink = _ParquetSink(self._store)
            file.parquet_writer = self._pq.ParquetWriter(
                file.sink, self._schema, compression=self.compression, compression_level=self._parquet_level
            )
        else:
            if self.compression == "gzip":
                file.compressor = _gzip_compressor(self._compression_level)
            if self.file_format == "csv":
                header = io.StringIO()
                csv.writer(header, lineterminator="\n").writerow((*self._columns, EXTRA_COLUMN))
                self._write_uncompressed(header.getvalue().encode())
        return file

    def _write_uncompressed(self, data: bytes) -> None:
        compressor = self._file.compressor
        self._store(compressor.compress(data) if compressor is not None else data)

    def _store(self, data: Any) -> None:
        """Add bytes as they will be stored in S3; upload a part once enough have built up."""
        if not data:
            return
        file = self._file
        file.sha256.update(data)
        file.buffer += data
        file.stored = file.stored + memoryview(data).nbytes
        if len(file.buffer) >= self._part_size:
            self._upload_part(file)

    def _roll_if_full(self) -> None:
        if self._file is not None and self._file.stored >= self._max_file_size:
            self._finish_file()

    def _upload_part(self, file: _OpenFile) -> None:
        if file.upload_id is None:
            response = self._s3(
                "create_multipart_upload",
                file,
                self._client.create_multipart_upload,
                Bucket=self.bucket,
                Key=file.key,
                **self._create_args,
            )
            file.upload_id = response["UploadId"]
        number = len(file.parts) + 1
        if number > MAX_PARTS:
            raise S3WriteError(
                f"Could not write s3://{self.bucket}/{file.key}: it would need more than S3's {MAX_PARTS} "
                f"parts; raise part_size or lower max_file_size.",
                bucket=self.bucket,
                key=file.key,
            )
        # A fresh buffer rather than clear(): the body is handed to botocore as it is, uncopied.
        body, file.buffer = file.buffer, bytearray()
        response = self._s3(
            f"upload_part (part {number})",
            file,
            self._client.upload_part,
            retry=True,
            Bucket=self.bucket,
            Key=file.key,
            UploadId=file.upload_id,
            PartNumber=number,
            Body=body,
            **self._part_args,
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if self._part_checksum_field:
            part[self._part_checksum_field] = response[self._part_checksum_field]
        file.parts.append(part)

    def _finish_file(self) -> None:
        file = self._file
        if file.parquet_writer is not None:
            file.parquet_writer.close()  # writes the footer through the sink
        elif file.compressor is not None:
            self._store(file.compressor.flush())
        if file.upload_id is None:
            response = self._s3(
                "put_object",
                file,
                self._client.put_object,
                retry=True,
                Bucket=self.bucket,
                Key=file.key,
                Body=file.buffer,
                **self._put_args,
            )
            parts = 1
        else:
            if file.buffer:
                self._upload_part(file)
            response = self._s3(
                "complete_multipart_upload",
                file,
                self._client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=file.key,
                UploadId=file.upload_id,
                MultipartUpload={"Parts": file.parts},
                **self._complete_args,
            )
            parts = len(file.parts)
        written = WrittenFile(
            key=file.key,
            records=file.records,
            bytes=file.stored,
            sha256=file.sha256.hexdigest(),
            parts=parts,
            etag=response["ETag"],
        )
        self._files.append(written)
        self._file = None
        log.info(
            "Wrote s3://%s/%s: %d records, %d bytes in %d part(s).",
            self.bucket,
            written.key,
            written.records,
            written.bytes,
            written.parts,
        )

    def _s3(self, action: str, file: _OpenFile, call: Callable[..., Any], *, retry: bool = False, **kwargs):
        try:
            return _call_s3(f"write s3://{self.bucket}/{file.key}", action, call, retry=retry, **kwargs)
        except S3WriteError as exc:
            outcome = self._abort_open_file()
            raise S3WriteError(
                f"{exc}{outcome}", bucket=self.bucket, key=file.key, error_code=exc.error_code
            ) from exc.__cause__

    def _abort_open_file(self) -> str:
        """Abort the open file's upload; return a sentence saying what S3 was left with."""
        file, self._file = self._file, None
        if file is None:
            return ""
        if file.parquet_writer is not None:
            file.sink.discarding = True
            with suppress(Exception):  # only releasing pyarrow's resources; nothing is kept
                file.parquet_writer.close()
        if file.upload_id is None:
            return " No object was written."
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=file.key, UploadId=file.upload_id, **self._abort_args
            )
        except Exception as exc:  # noqa: BLE001 - best effort: must not hide the error that led here
            code = _error_code(exc) or type(exc).__name__
            log.warning(
                "Could not abort the multipart upload %s of s3://%s/%s: %s",
                file.upload_id,
                self.bucket,
                file.key,
                exc,
            )
            return (
                f" Aborting its multipart upload also failed ({code}): an AbortIncompleteMultipartUpload "
                f"lifecycle rule on the bucket will remove the uploaded parts."
            )
        log.info("Aborted the multipart upload of s3://%s/%s.", self.bucket, file.key)
        return " Its multipart upload was aborted, so no object was written."


def _gzip_compressor(level: int) -> Any:
    """
    A streaming gzip compressor: ISA-L's deflate (the ``isal`` package) for levels 1-3 when it
    is installed, else zlib's. ISA-L compresses JSON about 4x faster than zlib's level 1 and a
    little smaller; its output is ordinary gzip. ISA-L has no levels above 3, and its level 0 is
    not "store", so other levels stay with zlib.
    """
    # wbits=31: a gzip header and trailer, so the file is a valid .gz, not raw zlib.
    if _isal_zlib is not None and 1 <= level <= 3:
        return _IsalGzip(level)
    return zlib.compressobj(level, zlib.DEFLATED, 31)


class _IsalGzip:
    """
    ISA-L's gzip compressor, brought to a byte boundary after each batch (a sync flush).

    Unflushed, ISA-L holds back up to ~100 KB of output, where zlib holds back a few KB, so the
    stored size that decides parts and file rolls would lag the records written. A flush per
    batch (1,000 records) costs a few bytes.
    """

    __slots__ = ("_compressor",)

    def __init__(self, level: int) -> None:
        self._compressor = _isal_zlib.compressobj(level, _isal_zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(_isal_zlib.Z_SYNC_FLUSH)

    def flush(self) -> bytes:
        return self._compressor.flush()


def _cell(value: Any) -> str | None:
    """A non-string value as the text of a CSV/Parquet string column."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value.__class__ is int:
        return str(value)
    encoded = msgspec.json.encode(value)
    if encoded[:1] == b'"':
        # Types JSON writes as strings (str subclasses, datetimes) keep their bare text.
        return msgspec.json.decode(encoded)
    return encoded.decode()


def _check_columns(columns: Sequence[str]) -> tuple[str, ...]:
    names = tuple(columns)
    if any(not isinstance(name, str) or not name for name in names):
        raise CodatInputError(f"columns must be non-empty strings, got {list(names)!r}.")
    if len(set(names)) != len(names):
        raise CodatInputError(f"columns must be unique, got {list(names)!r}.")
    if EXTRA_COLUMN in names:
        raise CodatInputError(f"columns must not include {EXTRA_COLUMN!r}: the writer adds it.")
    return names


def _operation_parameters(client: Any, operation: str) -> frozenset[str]:
    return frozenset(client.meta.service_model.operation_model(operation).input_shape.members)


def _check_extra_args(client: Any, extra_args: dict[str, Any], operations: Sequence[str]) -> None:
    accepted = frozenset.intersection(*(_operation_parameters(client, op) for op in operations))
    for name in extra_args:
        if name in _WRITER_PARAMETERS:
            raise CodatInputError(f"extra_args must not set {name!r}: the writer sets it.")
        if name not in accepted:
            raise CodatInputError(
                f"extra_args key {name!r} is not a parameter of S3's {' and '.join(operations)}; use "
                f"keys such as ServerSideEncryption, SSEKMSKeyId, ContentType, Metadata, StorageClass."
            )


def _arguments_for(client: Any, operation: str, extra_args: dict[str, Any]) -> dict[str, Any]:
    accepted = _operation_parameters(client, operation)
    return {name: value for name, value in extra_args.items() if name in accepted}


def _error_code(exc: BaseException) -> str | None:
    """S3's error code, botocore's error class name, or None for errors that are not S3's."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") or "Unknown"
    if isinstance(exc, BotoCoreError):
        return type(exc).__name__
    return None


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status in (408, 429) or _error_code(exc) in _TRANSIENT_ERROR_CODES
    return isinstance(exc, ConnectionError | HTTPClientError)


def _call_s3(what: str, action: str, call: Callable[..., Any], *, retry: bool, **kwargs) -> Any:
    """
    Call S3, retrying transient errors when ``retry``; raise S3WriteError naming what failed.

    :param what: completes "Could not ...", e.g. ``write s3://bucket/key``.
    :param action: the S3 call, e.g. ``upload_part (part 2)``.
    """

    def log_retry(state: tenacity.RetryCallState) -> None:
        log.warning(
            "Could not %s: %s failed (%s); attempt %d of %d, retrying in %.1f s.",
            what,
            action,
            _error_code(state.outcome.exception()),
            state.attempt_number,
            UPLOAD_ATTEMPTS,
            state.next_action.sleep,
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(UPLOAD_ATTEMPTS if retry else 1),
        wait=tenacity.wait_exponential(multiplier=UPLOAD_RETRY_WAIT_SECONDS, max=8),
        retry=tenacity.retry_if_exception(_is_transient),
        before_sleep=log_retry,
        reraise=True,
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                return call(**kwargs)
    except Exception as exc:
        code = _error_code(exc)
        if code is None:
            raise
        after = f" after {attempts} attempts" if attempts > 1 else ""
        raise S3WriteError(f"Could not {what}: {action} failed{after} with {_describe(exc)}.", error_code=code) from exc
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = str(error.get("Message") or "no message").rstrip(".")
        return f"S3 error {_error_code(exc)}: {message}"
    return f"{type(exc).__name__}: {str(exc).rstrip('.')}"


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> int:
    """
    Delete objects, up to ``DELETE_BATCH_SIZE`` (S3's 1000) per request. Missing keys count as deleted.

    :param client: a boto3 S3 client.
    :param bucket: the bucket.
    :param keys: the keys to delete; duplicates are sent once.
    :return: the number of distinct keys deleted.
    :raises S3WriteError: if a request fails, or S3 refuses some keys (every batch is still tried;
        the message names up to five refused keys with their error codes).
    """
    unique_keys = list(dict.fromkeys(keys))
    errors: list[dict[str, Any]] = []
    for batch in _batches(unique_keys, DELETE_BATCH_SIZE):
        response = _call_s3(
            f"delete objects from s3://{bucket}",
            f"delete_objects ({len(batch)} keys, from {batch[0]!r})",
            client.delete_objects,
            retry=True,
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
        )
        errors.extend(response.get("Errors", []))
    if errors:
        shown = ", ".join(
            f"{error.get('Key')} ({error.get('Code')}: {str(error.get('Message', '')).rstrip('.')})"
            for error in errors[:5]
        )
        more = f", and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise S3WriteError(
            f"Could not delete {len(errors)} of {len(unique_keys)} objects from s3://{bucket}: {shown}{more}.",
            bucket=bucket,
            error_code=errors[0].get("Code"),
        )
    return len(unique_keys)


def put_json(client: Any, bucket: str, key: str, obj: Any, extra_args: dict[str, Any] | None = None) -> None:
    """
    Write one JSON document with a single PUT, which S3 makes visible atomically (for manifests).

    The JSON is indented for people reading it; datetimes become RFC 3339 text.

    :param client: a boto3 S3 client.
    :param bucket: the bucket.
    :param key: the object key.
    :param obj: anything msgspec can encode as JSON.
    :param extra_args: S3 PutObject parameters, e.g. ``{"ServerSideEncryption": "AES256"}``.
        ``ContentType`` defaults to ``application/json``.
    :raises S3WriteError: if the PUT fails.
    """
    body = msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"
    arguments = {"ContentType": "application/json", **(extra_args or {})}
    _check_extra_args(client, arguments, ("PutObject",))
    try:
        _call_s3(
            f"write s3://{bucket}/{key}",
            "put_object",
            client.put_object,
            retry=True,
            Bucket=bucket,
            Key=key,
            Body=body,
            **arguments,
        )
    except S3WriteError as exc:
        exc.bucket, exc.key = bucket, key
        raise
