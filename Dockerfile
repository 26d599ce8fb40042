# Apache Airflow 3 with airflow-provider-codat installed, for docker-compose.yaml.
#
#   docker compose build                                   # or:
#   docker build -t airflow-provider-codat:local --build-arg AIRFLOW_VERSION=3.3.2 .
#
# Extends the official image as https://airflow.apache.org/docs/docker-stack/build.html
# recommends, rather than installing at container start (_PIP_ADDITIONAL_REQUIREMENTS).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

# The base image also sets ENV AIRFLOW_VERSION to its own version, which wins over this ARG.
ARG AIRFLOW_VERSION

USER airflow

# Only what building the package needs: no tests, no DAGs (mounted by Compose), nothing secret.
COPY --chown=airflow:0 pyproject.toml README.md /opt/provider/
COPY --chown=airflow:0 airflow_provider_codat /opt/provider/airflow_provider_codat

# Pinning apache-airflow in the same install stops pip from upgrading or downgrading the
# Airflow the image ships while it resolves the provider's requirements.
#   parquet: pyarrow, for file_format="parquet"
#   fake:    the fake Codat API served by the `fake-codat` service (docker compose --profile trial)
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/provider[parquet,fake]"
