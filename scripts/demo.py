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
    parser.add_argument("--work", type=Path, default=WORK, help="working folder (recreated)")
    args = parser.parse_args()

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    home = work / "airflow"
    home.mkdir(parents=True)
    started = time.monotonic()
    with LocalStack(companies=args.companies, records=args.records, log_dir=work / "logs") as stack:
        print(f"Fake Codat API: {stack.codat_url}   local S3: {stack.s3_url}   bucket: {stack.bucket}")
        env = airflow_env(home, ROOT / "dags", **stack.env)
        airflow = str(Path(sys.executable).with_name("airflow"))
        run = lambda *cmd: subprocess.run([airflow, *cmd], env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        print("Setting up Airflow (SQLite) ...")
        run("db", "migrate")
        run("pools", "set", "codat", "8", "Concurrent Codat extractions")
        print(f"Running {DAG_ID} for the data interval ending {LOGICAL_DATE} ...")
        log_path = work / "logs" / "dags-test.log"
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
        # The local S3 stops with this script: keep a copy of what landed to look at afterwards.
        copy = work / "s3" / stack.bucket
        stack.download(copy)
        total = sum(m["records"] for _, m in manifests)
        print()
        print(
            f"{len(manifests)} datasets, {total} records in s3://{stack.bucket}/codat/ in {time.monotonic() - started:.0f}s."
        )
        print(f"A copy of the bucket is in {_shown(copy)}/ (the local S3 stops now).")
        if manifests:
            example = next((key for key, m in manifests if m["files"]), manifests[0][0])
            print(f"Example manifest: {_shown(copy / example)}")
            parts = [f["key"] for _, m in manifests for f in m["files"] if f["key"].endswith(".jsonl.gz")]
            if parts:
                print(f"Its records:      zcat {_shown(copy / parts[0])} | head -n 2")
        print(f"Airflow's log of the run: {_shown(log_path)}")
        print("Each window's _manifest.json lists its files, record counts and checksums; see README 'S3 layout'.")
        print("To explore interactively: make airflow (the Airflow UI with these example DAGs).")
        if result.returncode != 0:
            print(f"The DAG run failed (exit {result.returncode}): see {log_path}", file=sys.stderr)
            return result.returncode
    return 0


def _shown(path: Path) -> Path:
    """``path`` relative to the current folder where it is below it: shorter to read and to paste."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
