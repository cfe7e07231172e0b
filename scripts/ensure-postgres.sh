#!/usr/bin/env bash
# Install Debian's postgresql (for tests/test_team_server.py and scripts/mlflow-server.sh) when it is
# missing and this user can; otherwise say so: that test then reports a skip with the reason.
set -eu
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's postgresql (for the team MLflow server test) ..."
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
else
  echo "note: PostgreSQL is not installed; tests/test_team_server.py will be skipped" \
       "(sudo apt-get install postgresql)" >&2
fi
