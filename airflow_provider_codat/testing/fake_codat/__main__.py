"""``python -m airflow_provider_codat.testing.fake_codat``: see :func:`.cli.main`."""

from __future__ import annotations

import sys

from airflow_provider_codat.testing.fake_codat.cli import main

if __name__ == "__main__":
    sys.exit(main())
