#!/usr/bin/env bash
# Run the provider's compatibility test subset against an older Airflow.
#
#   bash compat/run.sh [AIRFLOW_VERSION] [extra pytest args...]     (default: 3.2.0)
#
# Installs the fully pinned compat/airflow-$VERSION.txt into .venv-airflow-$VERSION (Python 3.11,
# created if missing, kept for reruns and ignored by git), installs this checkout into it without
# its dependencies, and runs the subset of the suite that checks the provider itself. Exits with
# pytest's exit code. See compat/airflow-$VERSION.in for how each pinned file was made.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="${1:-3.2.0}"
if [[ $# -gt 0 ]]; then shift; fi

requirements="compat/airflow-${version}.txt"
if [[ ! -f "$requirements" ]]; then
  echo "compat/run.sh: no pinned requirements for Airflow ${version} (${requirements})." >&2
  echo "Available:" $(ls compat/airflow-*.txt 2>/dev/null | sed -E 's|compat/airflow-(.*)\.txt|\1|') >&2
  exit 2
fi

# uv as the Makefile's ensure-uv finds it: on PATH, else as a module, else installed with pip.
if command -v uv >/dev/null 2>&1; then
  uv=(uv)
else
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "uv not found: installing it with pip (https://docs.astral.sh/uv/)"
    python3 -m pip install --quiet uv
  fi
  uv=(python3 -m uv)
fi

# --no-config everywhere: pyproject.toml's [tool.uv] pins apache-airflow to the main lock's
# version (constraint-dependencies), which would conflict with the older Airflow pinned here.
venv=".venv-airflow-${version}"
python="${venv}/bin/python"
if [[ ! -x "$python" ]]; then
  "${uv[@]}" venv --no-config --python 3.11 "$venv"
fi
"${uv[@]}" pip install --no-config --python "$python" -r "$requirements"
# The checkout itself, editable and without dependencies; its build backend (hatchling) is in the
# pinned file, so nothing is fetched unpinned.
"${uv[@]}" pip install --no-config --python "$python" --no-deps --no-build-isolation -e .

echo "Airflow $("$python" -c 'import airflow; print(airflow.__version__)') in ${venv}"
exec "$python" -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider \
  tests/test_get_provider_info.py \
  tests/hooks \
  tests/transfers \
  tests/sensors \
  tests/e2e/test_codat_to_s3_dag.py \
  tests/e2e/test_example_dags.py \
  "$@"
