#!/usr/bin/env bash
# `make run`: train a first model if the registry has none, then serve it over HTTP and gRPC.
# Ctrl-C (or SIGTERM) stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BENTOML=.venv/bin/bentoml
export MLOPS_HOME="${MLOPS_HOME:-$PWD/.mlops}"
HTTP_PORT="${HTTP_PORT:-3000}"
GRPC_PORT="${GRPC_PORT:-50051}"
GRPC_METRICS_PORT="${GRPC_METRICS_PORT:-50052}"

# The shared model store. Each server gets its own BENTOML_HOME whose `models` is that store:
# every BentoML server start empties $BENTOML_HOME/prometheus_multiproc_dir, so two servers on
# one home would wipe each other's metrics (in Kubernetes, an emptyDir per pod does the same).
export BENTOML_HOME="$MLOPS_HOME/bentoml"
mkdir -p "$BENTOML_HOME/models"
for server in http grpc; do
  home="$MLOPS_HOME/servers/$server"
  mkdir -p "$home"
  ln -sfn "$BENTOML_HOME/models" "$home/models"
done

if ! "$PY" -m training.registry current >/dev/null 2>&1; then
  echo "no current model in $MLOPS_HOME/registry.json: training one" >&2
  "$PY" -m training.train >/dev/null
fi
"$PY" -m training.registry current

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping servers" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

BENTOML_HOME="$MLOPS_HOME/servers/http" "$BENTOML" serve service:svc --host 127.0.0.1 --port "$HTTP_PORT" &
pids+=($!)
BENTOML_HOME="$MLOPS_HOME/servers/grpc" \
  BENTOML_CONFIG_OPTIONS="api_server.grpc.metrics.port=$GRPC_METRICS_PORT api_server.grpc.metrics.host=127.0.0.1" \
  "$BENTOML" serve-grpc service:svc --host 127.0.0.1 --port "$GRPC_PORT" &
pids+=($!)
echo "serving: HTTP http://127.0.0.1:$HTTP_PORT  gRPC 127.0.0.1:$GRPC_PORT  (Ctrl-C stops)" >&2
wait -n "${pids[@]}"
