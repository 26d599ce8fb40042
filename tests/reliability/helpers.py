"""What every reliability case checks, and the figures the suite reports.

The promise under test: for every window, either a complete dataset with its manifest or a clear
failure, never a silent gap or a duplicate. :meth:`Figures.check_window` reads a window's manifest
from S3, reads every file it lists (checking size, SHA-256 and record count), and compares the
records one by one with the fake Codat API's truth for the window: every expected record exactly
once and unchanged, nothing else. It counts what it checked, lost and duplicated, so the suite can
report its figures (docs/reliability.md).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.conftest import read_objects

START = datetime(2024, 2, 1, tzinfo=UTC)
END = datetime(2024, 2, 15, tzinfo=UTC)
#: Hook settings for fault cases: no backoff floor, a short cap on Retry-After.
FAST = {"retry_min_wait": 0, "max_retry_wait": 10}


def wait_past_midnight_utc() -> None:
    """
    A daily-quota 429 says "retry at 00:00 UTC". Within a minute of midnight that wait would fit the
    tests' cap on Retry-After, so wait for the new day first (bounded: 61 s at most, rarely at all).
    """
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if (midnight - now).total_seconds() < 60:
        time.sleep((midnight - now).total_seconds() + 1)


def wait_for_requests(fake: Any, fragment: str, count: int, timeout: float = 30) -> None:
    """
    Wait until the fake has answered ``count`` requests whose query holds ``fragment``.

    A request the client gave up on (read timeout, killed worker) is still being served by the
    fake, and counts against the company's concurrency limit until it ends, also in the next
    test on this worker: tests that stall requests wait here for them before they end.
    """
    deadline = time.monotonic() + timeout
    while sum(fragment in f"?{entry['query']}&" for entry in fake.request_log()) < count:
        assert time.monotonic() < deadline, f"the fake never finished {count} requests with {fragment!r}"
        time.sleep(0.1)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def in_window(records: Iterable[dict], start: datetime = START, end: datetime = END) -> list[dict]:
    """The records whose ``modifiedDate`` is in ``[start, end)``, as a window query selects them."""
    lo, hi = iso(start), iso(end)
    return [r for r in records if lo <= r["modifiedDate"] < hi]


def folder(company: str, data_type: str = "invoices", start: datetime = START, end: datetime = END) -> str:
    """The S3 folder of an incremental window (the operator's layout, default prefix)."""
    return f"codat/{data_type}/company_id={company}/window_start={start:%Y%m%dT%H%M%SZ}/window_end={end:%Y%m%dT%H%M%SZ}"


def record_id(record: dict) -> Any:
    """A record's identity within a company: id, plus its connection (and bank account) when scoped."""
    return (record.get("_connectionId"), record.get("_bankAccountId"), record["id"])


def parse_file(key: str, blob: bytes) -> list[dict]:
    if key.endswith(".jsonl.gz"):
        blob = gzip.decompress(blob)
    elif not key.endswith(".jsonl"):
        raise AssertionError(f"the reliability suite reads JSON Lines files, not {key}")
    return [json.loads(line) for line in blob.splitlines() if line]


def pending_uploads(s3, bucket: str, prefix: str = "") -> list[dict]:
    """Multipart uploads begun and neither completed nor aborted (invisible parts S3 bills for)."""
    return s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


class RecordsLost(AssertionError):
    """A record of the window is missing from what the manifest lists."""


class RecordsDuplicated(AssertionError):
    """A record is written more than once in one window."""


class PendingUploadsLeft(AssertionError):
    """Raised by :func:`assert_no_pending_uploads`, so an xfail can name exactly this failure."""


def assert_no_pending_uploads(s3, bucket: str, prefix: str = "") -> None:
    left = pending_uploads(s3, bucket, prefix)
    if left:
        raise PendingUploadsLeft(f"{len(left)} multipart upload(s) left pending: {[u['Key'] for u in left]}")


@dataclass
class WindowCheck:
    """What :meth:`Figures.check_window` found."""

    manifest: dict
    records: list[dict]
    checked: int
    lost: list
    duplicated: list
    unexpected: list
    changed: list


@dataclass
class Figures:
    """
    Counts over the suite: cases, records checked, lost and duplicated.

    Cases of tests marked xfail (a known provider bug, kept failing until it is fixed) are
    counted apart, so the figures say what the provider does today and the known bugs say what
    it does not do yet.
    """

    cases: list[dict] = field(default_factory=list)
    #: Other measurements worth reporting (load: requests, 429s, peak concurrency), by name.
    notes: dict[str, Any] = field(default_factory=dict)
    #: The test being run, and whether it is an expected failure (set by a conftest fixture).
    test: str = ""
    expected_failure: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, case: str, checked: int, lost: int, duplicated: int) -> None:
        with self._lock:
            self.cases.append(
                {
                    "case": case,
                    "test": self.test,
                    "checked": checked,
                    "lost": lost,
                    "duplicated": duplicated,
                    "known_bug": self.expected_failure,
                }
            )

    def note(self, name: str, value: Any) -> None:
        with self._lock:
            self.notes[name] = value

    def totals(self) -> dict[str, Any]:
        with self._lock:
            counted = [c for c in self.cases if not c["known_bug"]]
            return {
                "cases": len(counted),
                "records_checked": sum(c["checked"] for c in counted),
                "lost": sum(c["lost"] for c in counted),
                "duplicated": sum(c["duplicated"] for c in counted),
                "known_bug_cases": [c for c in self.cases if c["known_bug"]],
                "notes": dict(self.notes),
                "by_case": counted,
            }

    def compare(
        self,
        case: str,
        expected: Iterable[dict],
        records: Iterable[dict],
        *,
        may_contain: Iterable[dict] = (),
        key: Callable[[dict], Any] = record_id,
    ) -> tuple[int, list, list, list, list]:
        """
        Compare what was written with the truth, record by record, count it, and fail on any difference.

        :return: (records checked, lost, duplicated, unexpected, changed)
        """
        records = list(records)
        truth = {key(r): r for r in expected}
        optional = {key(r): r for r in may_contain}
        counts = Counter(key(r) for r in records)
        lost = [k for k in truth if counts[k] == 0]
        duplicated = [k for k, n in counts.items() if n > 1]
        unexpected = [k for k in counts if k not in truth and k not in optional]
        changed = [k for r in records if (k := key(r)) in truth and r != truth[k]]
        changed += [k for r in records if (k := key(r)) in optional and k not in truth and r != optional[k]]
        self.add(case, checked=len(truth), lost=len(lost), duplicated=len(duplicated))
        if lost:
            raise RecordsLost(f"{case}: {len(lost)} of {len(truth)} records lost, e.g. {lost[:3]}")
        if duplicated:
            raise RecordsDuplicated(f"{case}: {len(duplicated)} records written more than once, e.g. {duplicated[:3]}")
        assert not unexpected, f"{case}: {len(unexpected)} records not in the window, e.g. {unexpected[:3]}"
        assert not changed, f"{case}: {len(changed)} records differ from what Codat served, e.g. {changed[:3]}"
        return len(truth), lost, duplicated, unexpected, changed

    def check_window(
        self,
        case: str,
        s3: Any,
        bucket: str,
        window_folder: str,
        expected: Iterable[dict],
        *,
        may_contain: Iterable[dict] = (),
        key: Callable[[dict], Any] = record_id,
        allow_unlisted: bool = False,
    ) -> WindowCheck:
        """
        Check one window against the truth, record by record, and count the result.

        :param expected: every record the window must hold, exactly once and exactly as served.
        :param may_contain: records that may also appear, at most once and unchanged (records that
            left the window while it was read: they were in it when read).
        :param allow_unlisted: tolerate objects the manifest does not list (what a crashed attempt
            leaves until the next success cleans up); readers never see them.
        """
        objects = read_objects(s3, bucket, f"{window_folder}/")
        manifest_key = f"{window_folder}/_manifest.json"
        assert manifest_key in objects, f"no manifest at {manifest_key}; objects: {sorted(objects)}"
        manifest = json.loads(objects.pop(manifest_key))
        assert manifest["status"] == "complete", manifest
        listed = [entry["key"] for entry in manifest["files"]]
        assert set(listed) <= set(objects), f"listed but missing: {sorted(set(listed) - set(objects))}"
        # Exactly the manifest's files: no stale part of another attempt left beside them.
        assert allow_unlisted or sorted(objects) == sorted(listed), (
            f"objects not in the manifest: {sorted(set(objects) - set(listed))}; "
            f"listed but missing: {sorted(set(listed) - set(objects))}"
        )
        records: list[dict] = []
        for entry in manifest["files"]:
            blob = objects[entry["key"]]
            assert entry["bytes"] == len(blob), entry
            assert entry["sha256"] == hashlib.sha256(blob).hexdigest(), entry
            parsed = parse_file(entry["key"], blob)
            assert entry["records"] == len(parsed), entry
            records.extend(parsed)
        assert manifest["records"] == len(records)

        outcome = self.compare(case, expected, records, may_contain=may_contain, key=key)
        return WindowCheck(manifest, records, *outcome)


def no_manifest(s3, bucket: str, window_folder: str) -> None:
    """Assert that a failed window left nothing a reader could take for data: no manifest, no part."""
    objects = read_objects(s3, bucket, f"{window_folder}/")
    assert not objects, f"a failed attempt left objects behind: {sorted(objects)}"
    assert_no_pending_uploads(s3, bucket, f"{window_folder}/")
