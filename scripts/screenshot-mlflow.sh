#!/usr/bin/env bash
# Screenshot the MLflow UI comparing the train runs of the last `dvc repro`
# into docs/mlflow-compare.png (the README shows it). Needs Debian's chromium
# (apt-get install chromium) and a store made by `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-5077}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
setsid .venv/bin/mlflow server --backend-store-uri "sqlite:///$PWD/mlflow.db" --host 127.0.0.1 \
  --port "$port" --workers 1 >/tmp/mlflow-screenshot.log 2>&1 &
server=$!
trap 'kill -TERM -- -$server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
ids=$(.venv/bin/python - <<'PY'
import json, mlflow
client = mlflow.MlflowClient("sqlite:///mlflow.db")
exp = client.get_experiment_by_name("lenet5-variants")
runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and tags.dvc_stage LIKE 'train@%'",
                          order_by=["attributes.start_time DESC"], max_results=5)
print(json.dumps({"exp": exp.experiment_id, "runs": [r.info.run_id for r in runs]}))
PY
)
exp=$(echo "$ids" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["exp"])')
runs=$(echo "$ids" | .venv/bin/python -c 'import json,sys,urllib.parse; print(urllib.parse.quote(json.dumps(json.load(sys.stdin)["runs"])))')
url="http://127.0.0.1:$port/#/compare-runs?runs=$runs&experiments=%5B%22$exp%22%5D"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1800,1000 --virtual-time-budget=20000 \
  --hide-scrollbars --screenshot="$PWD/docs/mlflow-compare.png" "$url"
echo "wrote docs/mlflow-compare.png ($url)"
