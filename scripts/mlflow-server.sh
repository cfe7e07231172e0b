#!/usr/bin/env bash
# A team's MLflow server: runs and the model registry in PostgreSQL, artifacts in
# S3-compatible storage, served through the tracking server (`--serve-artifacts`),
# so clients need only MLFLOW_TRACKING_URI=http://<host>:<port> and their login,
# no S3 credentials. MLflow's basic-auth app asks every client for a user name and
# password; PostgreSQL asks MLflow for one too (scram-sha-256, never `trust`).
#
#   MLFLOW_AUTH_ADMIN_PASSWORD=... MLFLOW_ALLOWED_HOSTS=teamhost scripts/mlflow-server.sh
#                                            # foreground; Ctrl-C stops MLflow and PostgreSQL
#
# Settings (environment):
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts go, e.g. s3://team-dvc/mlflow (required)
#   MLFLOW_AUTH_ADMIN_PASSWORD    the password of the server's admin user, 12+ characters (required;
#                                 the name: MLFLOW_AUTH_ADMIN, else admin)
#   MLFLOW_USERS_FILE             teammates to create, one `name:password` a line, 12+ characters (optional)
#   MLFLOW_ALLOWED_HOSTS          the host names clients use in their URI, comma-separated (e.g. teamhost,
#                                 teamhost.example.org); `localhost` is always allowed. MLflow refuses any
#                                 other Host header (its guard against DNS rebinding): HTTP 403
#   MLFLOW_S3_ENDPOINT_URL        an S3-compatible endpoint (MinIO, moto...); unset for AWS
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  the server's S3 credentials
#   MLFLOW_BACKEND_STORE_URI      an existing database, e.g. postgresql+psycopg2://mlflow:pw@db/mlflow
#                                 (and MLFLOW_AUTH_DATABASE_URI for the users); unset: a PostgreSQL
#                                 cluster of our own in $PGDATA, its password in $STATE/db-password
#   STATE (.mlflow-server), PGDATA ($STATE/postgres), PGPORT (5433): our files, that cluster and its port
#   MLFLOW_HOST (127.0.0.1), MLFLOW_PORT (5000): where the server listens
# PostgreSQL comes from Debian's `postgresql` package, installed when missing and root.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MLFLOW_ARTIFACTS_DESTINATION:?set it to the artifacts bucket, e.g. s3://team-dvc/mlflow}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set it: the admin password of the server (basic auth)}"
if [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -lt 12 ]; then  # MLflow's own rule, said before anything starts
  echo "error: MLFLOW_AUTH_ADMIN_PASSWORD must have at least 12 characters (MLflow's rule for passwords)" >&2
  exit 2
fi
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
mlflow=${MLFLOW_BIN:-.venv/bin/mlflow}
state=$(realpath -m "${STATE:-.mlflow-server}")
mkdir -p "$state"  # not 700: PostgreSQL runs as its own user inside; the secrets are 600 files
server="" pg_stop=()
cleanup() {  # on any exit: MLflow first, then our PostgreSQL
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ ${#pg_stop[@]} -gt 0 ]; then "${pg_stop[@]}" >/dev/null || true; fi
}
trap cleanup EXIT

if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
  pgdata=$(realpath -m "${PGDATA:-$state/postgres}")
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
    as_owner=(runuser -u postgres -- env -C /)  # from /: the clone may be a folder it cannot enter
    mkdir -p "$(dirname "$pgdata")"
    if ! runuser -u postgres -- test -x "$(dirname "$pgdata")"; then
      # the postgres user cannot reach the folder (a clone under root's home, which is mode 700)
      if [ -n "${PGDATA:-}" ]; then
        echo "error: PGDATA $pgdata is in a folder the postgres user cannot reach; choose one it can (e.g. under /var/lib/postgresql)" >&2
        exit 2
      fi
      home=$(getent passwd postgres | cut -d: -f6)
      pgdata="$home/mlflow-server-$(printf '%s' "$state" | md5sum | cut -c1-12)"  # one per checkout
      echo "PostgreSQL's data: $pgdata (the postgres user cannot reach $state; PGDATA chooses another place)"
    fi
    mkdir -p "$pgdata" && chown postgres: "$pgdata"
  fi
  if [ ! -s "$state/db-password" ]; then  # made once, readable by this user only
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$state/db-password")
  fi
  export PGPASSWORD=$(cat "$state/db-password")
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    pwfile=$(mktemp) && printf '%s\n' "$PGPASSWORD" > "$pwfile" && chmod 644 "$pwfile"
    "${as_owner[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 >/dev/null
    rm -f "$pwfile"
  elif grep -Eq '^[^#]*\btrust\b' "$pgdata/pg_hba.conf"; then
    echo "error: the PostgreSQL cluster in $pgdata lets anyone in (trust, made by an older version of this" \
      "script): move it away to make a new one with a password, or set MLFLOW_BACKEND_STORE_URI" >&2
    exit 2
  fi
  "${as_owner[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-p $pgport -k $pgdata -c listen_addresses=127.0.0.1" start >/dev/null
  pg_stop=("${as_owner[@]}" "$bin/pg_ctl" -D "$pgdata" -m fast stop)
  for db in mlflow mlflow_auth; do
    "$bin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" \
      | grep 1 >/dev/null || "$bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres "$db"
  done
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://postgres:$PGPASSWORD@127.0.0.1:$pgport/mlflow"
  MLFLOW_AUTH_DATABASE_URI="postgresql+psycopg2://postgres:$PGPASSWORD@127.0.0.1:$pgport/mlflow_auth"
fi

# Basic auth: MLflow reads its settings from an ini file; ours lives in $STATE (mode 600: it names the database).
# Teammates may log runs to every experiment (EDIT); the admin manages users and permissions.
# A login is checked once a minute, not on every request (MLflow's auth cache, off by default): a check costs
# ~70 ms of CPU by design (scrypt), and a stage logging its epochs makes hundreds of requests. A password changed
# through MLflow's API counts at once on the worker that took the change; with MLFLOW_WORKERS > 1, the other
# workers may take the old one for up to that minute.
(umask 077 && cat > "$state/basic_auth.ini" <<INI
[mlflow]
default_permission = EDIT
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$state/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
INI
)
export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then  # signs the UI's CSRF tokens: made once, kept
  [ -s "$state/secret-key" ] || (umask 077 && head -c 32 /dev/urandom | base64 > "$state/secret-key")
  export MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$state/secret-key")
fi

allowed="localhost,localhost:*"
IFS=, read -ra names <<< "${MLFLOW_ALLOWED_HOSTS:-}"
for name in "${names[@]}"; do
  name=$(echo "$name" | tr -d ' ')
  [ -n "$name" ] && allowed="$allowed,$name,$name:*"
done

echo "MLflow on http://$host:$port (host names: $allowed; basic auth): runs in PostgreSQL, artifacts in" \
  "$MLFLOW_ARTIFACTS_DESTINATION"
# In the background, not exec: users are created once it answers, and cleanup() stops PostgreSQL after it.
"$mlflow" server --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-1}" --app-name basic-auth \
  --allowed-hosts "$allowed" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts &
server=$!

if [ -n "${MLFLOW_USERS_FILE:-}" ]; then  # once the server answers: each teammate, unless there already
  for _ in $(seq 120); do
    curl -sf "http://localhost:$port/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || exit 1
    sleep 0.5
  done
  while IFS=: read -r user password; do
    [ -z "$user" ] && continue
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "${MLFLOW_AUTH_ADMIN:-admin}:$MLFLOW_AUTH_ADMIN_PASSWORD" \
      -H 'Content-Type: application/json' -d "{\"username\": \"$user\", \"password\": \"$password\"}" \
      "http://localhost:$port/api/2.0/mlflow/users/create")
    case $code in
      200) echo "user $user created" ;;
      400) echo "user $user exists already" ;;
      *) echo "warning: user $user not created (HTTP $code)" >&2 ;;
    esac
  done < "$MLFLOW_USERS_FILE"
fi
wait "$server"
