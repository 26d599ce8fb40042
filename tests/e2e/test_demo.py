"""``make demo`` for real: the script the README's first command runs, on a small data set."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("demo"), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_example_dag_and_shows_what_landed(tmp_path):
    work = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--work",
            str(work),
            "--companies",
            "2",
            "--records",
            "400",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    # Every dataset the run wrote is in the table and in the local copy of the bucket, checksums intact.
    copy = work / "s3" / "codat-landing"
    manifests = [json.loads(path.read_text()) for path in sorted(copy.rglob("_manifest.json"))]
    rows = re.findall(r"^([0-9a-f-]{36}) +(\S+) +(complete|skipped) +(\d+)  ", out, flags=re.MULTILINE)
    assert sorted(rows) == sorted((m["company_id"], m["data_type"], m["status"], str(m["records"])) for m in manifests)
    assert {m["company_id"] for m in manifests} == {row[0] for row in rows} and len({row[0] for row in rows}) == 2
    total = sum(m["records"] for m in manifests)
    assert total > 0
    assert f"{len(manifests)} datasets, {total} records in s3://codat-landing/codat/" in out
    for manifest in manifests:
        for file in manifest["files"]:
            body = (copy / file["key"]).read_bytes()
            assert hashlib.sha256(body).hexdigest() == file["sha256"]
            assert len(gzip.decompress(body).splitlines()) == file["records"]

    # Where to look: paths relative to where the demo was run, that exist after it stopped.
    assert "A copy of the bucket is in demo/s3/codat-landing/ (the local S3 stops now)." in out
    manifest_path = re.search(r"^Example manifest: (\S+)$", out, flags=re.MULTILINE).group(1)
    assert (tmp_path / manifest_path).is_file()
    part_path = re.search(r"^Its records: +zcat (\S+) \| head -n 2$", out, flags=re.MULTILINE).group(1)
    assert json.loads(gzip.decompress((tmp_path / part_path).read_bytes()).splitlines()[0])["id"]
