"""A one-machine stand-in for Codat and S3: the fake Codat API and moto's S3 server as local processes.

Used by ``make demo``, ``make airflow``, the benchmarks and end-to-end tests; usable by anyone who
wants to try the provider without a Codat account or an AWS bucket::

    with LocalStack(companies=5, bucket="codat-landing") as stack:
        subprocess.run(["airflow", "dags", "test", "example_codat_to_s3"], env={**os.environ, **stack.env})

Both servers bind 127.0.0.1 on free ports and are stopped by PID when the block ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from airflow_provider_codat.testing.fake_codat.config import DEFAULT_API_KEY

#: Test credentials for the local S3; moto accepts any.
S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def aws_connection(endpoint_url: str, **config_kwargs: dict) -> dict:
    """
    An Airflow ``aws`` connection (as a dict) for a local S3 at ``endpoint_url``, path-style.

    :param endpoint_url: e.g. ``http://127.0.0.1:9000``.
    :param config_kwargs: more botocore config sections, e.g. ``retries={"total_max_attempts": 2}``.
    """
    return {
        "conn_type": "aws",
        "login": S3_CREDENTIALS["aws_access_key_id"],
        "password": S3_CREDENTIALS["aws_secret_access_key"],
        "extra": {
            "region_name": S3_CREDENTIALS["region_name"],
            "endpoint_url": endpoint_url,
            "config_kwargs": {"s3": {"addressing_style": "path"}, **config_kwargs},
        },
    }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers any HTTP status, or raise with what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{' '.join(process.args)} exited with {process.returncode} before serving {url}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"Nothing answered at {url} within {timeout:.0f}s")


def stop(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """
    Stop a process we started, and everything it started: SIGTERM, then SIGKILL if it lingers.

    Processes here are started in a session of their own (``start_new_session=True``), so their
    process group id is their PID: signalling the group reaches children that would otherwise
    outlive their parent (``airflow standalone`` leaves its scheduler and api-server behind).
    """
    if process is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            process.wait(timeout)
            if sig == signal.SIGTERM:
                # The leader is gone; give its children the same time, then make sure.
                deadline = time.monotonic() + timeout
                while _group_alive(process.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not _group_alive(process.pid):
                    return
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStack:
    """
    The fake Codat API and a local S3, started as processes.

    :param companies: companies the fake Codat API serves.
    :param records: records per record set (per company and data type).
    :param bucket: a bucket to create in the local S3.
    :param fake_args: more command-line flags for the fake (see ``python -m
        airflow_provider_codat.testing.fake_codat --help``).
    :param log_dir: where the servers' output goes (default: discarded).
    :param recent_days: spread records' ``modifiedDate`` over the last N days up to now (default: the
        fake's fixed Q1 2024), so scheduled runs of today's intervals find data.
    """

    def __init__(
        self,
        *,
        companies: int = 5,
        records: int = 20,
        bucket: str = "codat-landing",
        fake_args: Sequence[str] = (),
        log_dir: Path | None = None,
        recent_days: int | None = None,
    ) -> None:
        self.companies = companies
        self.records = records
        self.bucket = bucket
        self.fake_args = list(fake_args)
        self.log_dir = log_dir
        if recent_days:
            now = time.time()
            to_iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
            window = {"modified_from": to_iso(now - recent_days * 86400), "modified_to": to_iso(now)}
            self.fake_args += ["--config", json.dumps(window)]
        self.codat_url = ""
        self.s3_url = ""
        self._processes: list[subprocess.Popen] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._processes.append(process)
        return process

    def start(self) -> LocalStack:
        """Start both servers and create the bucket."""
        codat_port, s3_port = free_port(), free_port()
        self.codat_url = f"http://127.0.0.1:{codat_port}"
        self.s3_url = f"http://127.0.0.1:{s3_port}"
        fake = self._spawn(
            "fake-codat",
            [
                sys.executable, "-m", "airflow_provider_codat.testing.fake_codat", "--port", str(codat_port),
                "--companies", str(self.companies), "--records", str(self.records), *self.fake_args,
            ],
        )  # fmt: skip
        moto = self._spawn(
            "s3", [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(s3_port)]
        )
        wait_for_http(f"{self.codat_url}/_fake/stats", process=fake)
        wait_for_http(self.s3_url, process=moto)
        self.s3_client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        """Stop every process this stack started."""
        for process in reversed(self._processes):
            stop(process)
        self._processes.clear()

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def s3_client(self):
        """A boto3 client for the local S3."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.s3_url, config=Config(s3={"addressing_style": "path"}), **S3_CREDENTIALS
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point Airflow's ``codat_default`` and ``aws_default`` here."""
        codat = {"conn_type": "codat", "password": DEFAULT_API_KEY, "host": self.codat_url}
        aws = aws_connection(self.s3_url)
        return {
            "AIRFLOW_CONN_CODAT_DEFAULT": json.dumps(codat),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
            "CODAT_S3_BUCKET": self.bucket,
            # The local S3 accepts these; they keep boto3 from looking for real credentials.
            "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": S3_CREDENTIALS["region_name"],
        }

    def company_ids(self) -> list[str]:
        """The fake's company ids, in order."""
        body = requests.get(f"{self.codat_url}/_fake/companies", timeout=10).json()
        return [c if isinstance(c, str) else c["id"] for c in body]

    def download(self, destination: Path) -> list[Path]:
        """
        Copy every object in the bucket to ``destination``/``<key>``, so it can be looked at after the
        local S3 has stopped.

        :return: the files written.
        """
        s3 = self.s3_client()
        root = destination.resolve()
        written = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                path = (root / obj["Key"]).resolve()
                if not path.is_relative_to(root):
                    raise ValueError(f"Refusing to write object {obj['Key']!r} outside {root}")
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(self.bucket, obj["Key"], str(path))
                written.append(path)
        return written

    def manifests(self, prefix: str = "") -> list[tuple[str, dict]]:
        """Every ``_manifest.json`` in the bucket, with its key."""
        s3 = self.s3_client()
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/_manifest.json"):
                    body = s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                    found.append((obj["Key"], json.loads(body)))
        return found


def airflow_env(home: Path, dags_folder: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``airflow`` CLI on SQLite in ``home`` with ``dags_folder``."""
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env
