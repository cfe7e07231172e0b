#!/usr/bin/env bash
# Install the real services the tests run when they are missing and this user can (Debian packages):
# postgresql (the team MLflow server, a shared Optuna search) and chromium (the MLflow UI's landing page).
# Otherwise say so: the tests that need them then fail, naming what is missing.
set -eu
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's ${missing[*]} (for the tests' real servers and browser) ..."
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "note: ${missing[*]} not installed; the tests that need them will fail" \
       "(sudo apt-get install ${missing[*]})" >&2
fi
