"""Apache Airflow provider for Codat: move accounting data from the Codat API into Amazon S3."""

from __future__ import annotations

__version__ = "0.1.0"
