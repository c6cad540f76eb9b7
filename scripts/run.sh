#!/usr/bin/env bash
# `make run`: train a first model if the registry has none, then serve it over HTTP and gRPC.
# Ctrl-C (or SIGTERM) stops both servers. Ports: HTTP_PORT (3000), GRPC_PORT (50051) and
# GRPC_METRICS_PORT (3001, the gRPC server's Prometheus port), each settable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BENTOML=.venv/bin/bentoml
export MLOPS_HOME="${MLOPS_HOME:-$PWD/.mlops}"
export BENTOML_DO_NOT_TRACK="${BENTOML_DO_NOT_TRACK:-true}"  # no usage telemetry unless asked for
HTTP_PORT="${HTTP_PORT:-3000}"
GRPC_PORT="${GRPC_PORT:-50051}"
# Below Linux's ephemeral range (32768-60999): a port in it can be handed to any outgoing
# connection first, and the server then fails to bind it.
GRPC_METRICS_PORT="${GRPC_METRICS_PORT:-3001}"

# Every port free before anything starts, or one clear line naming it and how to move it.
"$PY" - "$HTTP_PORT" "$GRPC_PORT" "$GRPC_METRICS_PORT" <<'EOF'
import socket, sys
def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
names = ("HTTP_PORT", "GRPC_PORT", "GRPC_METRICS_PORT")
ports = {}
for name, text in zip(names, sys.argv[1:]):
    if not text.isdigit() or not 0 < int(text) < 65536:
        fail(f"{name}={text!r} is not a port number")
    if int(text) in ports.values():
        fail(f"{name}={text} is also another server's port: give each its own")
    ports[name] = int(text)
for name, port in ports.items():
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            fail(f"port {port} ({name}) is in use ({exc.strerror}): stop what holds it, "
                 f"or pick another, e.g. make run {name}={port + 100}")
EOF

# One model store (MODEL_STORE) for every program; each server gets a BENTOML_HOME of its own:
# every BentoML server start empties $BENTOML_HOME/prometheus_multiproc_dir, so two servers on
# one home would wipe each other's metrics (in Kubernetes, each pod's /tmp does the same).
export BENTOML_HOME="$MLOPS_HOME/bentoml"
export MODEL_STORE="$BENTOML_HOME/models"

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
# PROMETHEUS_MULTIPROC_DIR: BentoML 1.4.40 starts the gRPC server's metrics process without it,
# and that process then answers every scrape with a 500; it must be the folder BentoML uses.
BENTOML_HOME="$MLOPS_HOME/servers/grpc" PROMETHEUS_MULTIPROC_DIR="$MLOPS_HOME/servers/grpc/prometheus_multiproc_dir" \
  BENTOML_CONFIG_OPTIONS="api_server.grpc.metrics.port=$GRPC_METRICS_PORT api_server.grpc.metrics.host=127.0.0.1" \
  "$BENTOML" serve-grpc service:svc --host 127.0.0.1 --port "$GRPC_PORT" &
pids+=($!)
echo "serving: HTTP http://127.0.0.1:$HTTP_PORT  gRPC 127.0.0.1:$GRPC_PORT  (metrics: :$HTTP_PORT/metrics, :$GRPC_METRICS_PORT/; Ctrl-C stops)" >&2
wait -n "${pids[@]}"
