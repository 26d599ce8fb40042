"""``make airflow``: the Airflow UI with the example DAGs, wired to a local fake Codat API and a local S3.

Starts the fake Codat API and moto's S3 server on free loopback ports, then ``airflow standalone``
(scheduler, dag-processor, api-server, triggerer; SQLite, LocalExecutor) in ``.airflow/`` with the
``codat_default`` and ``aws_default`` connections pointing at them, the ``codat`` pool created and
the example DAGs unpaused. Prints the URL and login, and stops everything it started on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from airflow_provider_codat.testing.local_stack import LocalStack, airflow_env, free_port, stop, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "admin", "admin"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".airflow", help="AIRFLOW_HOME (recreated)")
    parser.add_argument("--port", type=int, default=8080, help="UI/API port (0: a free one)")
    parser.add_argument("--companies", type=int, default=5)
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--state-file", type=Path, help="write the URLs and login here as JSON once ready")
    args = parser.parse_args()

    port = args.port or free_port()
    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)
    # Airflow's simple auth manager reads generated passwords from this file: a known login for a local trial.
    (args.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))

    stopping = False

    def request_stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    stack = LocalStack(companies=args.companies, records=args.records, log_dir=args.home / "logs", recent_days=30)
    with stack:
        env = airflow_env(
            args.home,
            ROOT / "dags",
            **stack.env,
            CODAT_EXAMPLE_COMPANY_ID=stack.company_ids()[0],
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
            AIRFLOW__CORE__PARALLELISM="8",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        )
        airflow = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            [airflow, "pools", "set", "codat", "8", "Concurrent Codat extractions"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log = open(args.home / "logs" / "standalone.log", "wb")  # noqa: SIM115 - closed below
        standalone = subprocess.Popen(
            [airflow, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/api/v2/monitor/health", timeout=180, process=standalone)
            _wait_for_dags(url, timeout=180, process=standalone)
            state = {
                "url": url,
                "user": USER,
                "password": PASSWORD,
                "codat_url": stack.codat_url,
                "s3_url": stack.s3_url,
                "bucket": stack.bucket,
                "pid": standalone.pid,
            }
            if args.state_file:
                args.state_file.write_text(json.dumps(state))
            print(f"Airflow is up: {url}  (login {USER} / {PASSWORD})")
            print(f"Fake Codat API: {stack.codat_url}   local S3: {stack.s3_url}   bucket: {stack.bucket}")
            print("Trigger example_codat_to_s3 from the UI; Ctrl-C stops everything.")
            while not stopping and standalone.poll() is None:
                time.sleep(0.5)
        finally:
            stop(standalone, timeout=30)
            log.close()
    return 0


def _wait_for_dags(url: str, timeout: float, process: subprocess.Popen) -> None:
    """Wait until the dag-processor has registered the example DAGs."""
    token = requests.post(f"{url}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=10).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("airflow standalone exited; see its log in the logs folder")
        response = requests.get(f"{url}/api/v2/dags/example_codat_to_s3", headers=headers, timeout=10)
        if response.status_code == 200:
            return
        time.sleep(1)
    raise RuntimeError("The example DAGs did not appear in Airflow in time")


if __name__ == "__main__":
    sys.exit(main())
