"""``make demo``: run the scheduled example DAG for one data interval, end to end, on this machine.

Starts the fake Codat API and a local S3 (moto's server) on free loopback ports, a real Airflow on
SQLite in ``.demo/airflow``, runs ``airflow dags test example_codat_to_s3`` for one data interval,
prints what landed in S3, and stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_codat.testing.local_stack import LocalStack, airflow_env

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".demo"
DAG_ID = "example_codat_to_s3"
#: A run at 01:00 on 2 March reads the interval [1 March 01:00, 2 March 01:00): the fake's data spans Q1 2024.
LOGICAL_DATE = "2024-03-02T01:00:00+00:00"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=6)
    parser.add_argument("--records", type=int, default=3000, help="records per company and data type")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    home = WORK / "airflow"
    home.mkdir(parents=True)
    started = time.monotonic()
    with LocalStack(companies=args.companies, records=args.records, log_dir=WORK / "logs") as stack:
        print(f"Fake Codat API: {stack.codat_url}   local S3: {stack.s3_url}   bucket: {stack.bucket}")
        env = airflow_env(home, ROOT / "dags", **stack.env)
        airflow = str(Path(sys.executable).with_name("airflow"))
        run = lambda *cmd: subprocess.run([airflow, *cmd], env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        print("Setting up Airflow (SQLite) ...")
        run("db", "migrate")
        run("pools", "set", "codat", "8", "Concurrent Codat extractions")
        print(f"Running {DAG_ID} for the data interval ending {LOGICAL_DATE} ...")
        log_path = WORK / "logs" / "dags-test.log"
        with open(log_path, "wb") as log:
            result = subprocess.run(
                [airflow, "dags", "test", DAG_ID, LOGICAL_DATE], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        manifests = stack.manifests()
        print()
        print(f"{'company':<38} {'data type':<20} {'status':<9} {'records':>8}  files")
        for _, manifest in sorted(manifests, key=lambda m: (m[1]["company_id"], m[1]["data_type"])):
            names = ", ".join(f["key"].rsplit("/", 1)[-1] for f in manifest["files"]) or manifest.get("reason", "")
            print(
                f"{manifest['company_id']:<38} {manifest['data_type']:<20} {manifest['status']:<9} "
                f"{manifest['records']:>8}  {names}"
            )
        if manifests:
            example = manifests[0][0]
            print(f"\nExample manifest: s3://{stack.bucket}/{example}")
        total = sum(m["records"] for _, m in manifests)
        print()
        print(
            f"{len(manifests)} datasets, {total} records in s3://{stack.bucket}/codat/ in {time.monotonic() - started:.0f}s."
        )
        print(f"Airflow's log of the run: {log_path}")
        print("Each window's _manifest.json lists its files, record counts and checksums; see README 'S3 layout'.")
        print("To explore interactively: make airflow (the Airflow UI with these example DAGs).")
        if result.returncode != 0:
            print(f"The DAG run failed (exit {result.returncode}): see {log_path}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
