#!/usr/bin/env bash
# A team's MLflow server: runs and the model registry in PostgreSQL, artifacts in
# S3-compatible storage, served through the tracking server (`--serve-artifacts`),
# so clients need only MLFLOW_TRACKING_URI=http://<host>:<port>, no S3 credentials.
#
#   scripts/mlflow-server.sh                 # foreground; Ctrl-C stops MLflow and PostgreSQL
#
# Settings (environment):
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts go, e.g. s3://team-dvc/mlflow (required)
#   MLFLOW_S3_ENDPOINT_URL        an S3-compatible endpoint (MinIO, moto...); unset for AWS
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  the server's S3 credentials
#   MLFLOW_BACKEND_STORE_URI      an existing database, e.g. postgresql+psycopg2://mlflow@db/mlflow;
#                                 unset: a PostgreSQL cluster of our own in $PGDATA
#   PGDATA (.mlflow-server/postgres), PGPORT (5433): that cluster's folder and port
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000): where the server listens
# PostgreSQL comes from Debian's `postgresql` package, installed when missing and root.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MLFLOW_ARTIFACTS_DESTINATION:?set it to the artifacts bucket, e.g. s3://team-dvc/mlflow}"
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
mlflow=${MLFLOW_BIN:-.venv/bin/mlflow}

if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  pgdata=$(realpath -m "${PGDATA:-.mlflow-server/postgres}")
  pgport=${PGPORT:-5433}
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Installing Debian's postgresql ..."
      apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
      bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    else
      echo "error: PostgreSQL is not installed: sudo apt-get install postgresql, or set MLFLOW_BACKEND_STORE_URI" >&2
      exit 2
    fi
  fi
  as_owner=()  # PostgreSQL refuses to run as root: root runs it as the postgres user
  if [ "$(id -u)" = 0 ]; then
    as_owner=(runuser -u postgres --)
    mkdir -p "$pgdata" && chown postgres: "$pgdata"
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    "${as_owner[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  "${as_owner[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
  trap '"${as_owner[@]}" "$bin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null' EXIT
  "$bin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" \
    | grep -q 1 || "$bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres mlflow
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://postgres@127.0.0.1:$pgport/mlflow"
fi

echo "MLflow on http://$host:$port: runs in $MLFLOW_BACKEND_STORE_URI, artifacts in $MLFLOW_ARTIFACTS_DESTINATION"
# Not exec: the trap above stops PostgreSQL when the server exits.
"$mlflow" server --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-1}" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts
