#!/usr/bin/env bash
# The minikube walkthrough (docs/kubernetes.md) as one script. It needs minikube, kubectl and Docker
# on a machine that can run a cluster (our CI machines cannot run one). Each step says what CI
# (`make test`) proves of it: [cluster] runs against a real v1.34 control plane whose nodes kwok
# plays (tests/cluster), [e2e] runs our containers as the manifests declare (tests/e2e), [none] is
# not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=churn-mlops
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE="churn-service:$VERSION"

step() { printf '\n==> %s\n' "$*" >&2; }

step "[none: tests/cluster starts a control plane with a node of this size] start minikube with a CNI that enforces NetworkPolicy"
minikube start --cni=calico --kubernetes-version=v1.34.0 --cpus=2 --memory=6g

step "[e2e: the build; none: the load] build the image and load it into minikube"
make image
minikube image load "$IMAGE"

step "[cluster: --validate=strict, admission] deploy"
kubectl apply -k kustomize/overlays/minikube

step "[cluster: Job completes, rollouts; e2e: the training itself] follow the first training (the Job deletes itself when done), then wait for the API"
kubectl -n "$NS" logs -f job/churn-train || true
kubectl -n "$NS" rollout status deploy/churn-api --timeout=15m
kubectl -n "$NS" rollout status deploy/churn-api-grpc --timeout=15m

step "[none: e2e calls the containers directly] call the API through the NodePort"
HOST=$(minikube ip)
curl -s "http://$HOST:30080/startup"; echo
.venv/bin/python -m churn.client --address "http://$HOST:30080" --csv data/telco_churn.csv --limit 100 >/dev/null
.venv/bin/python -m churn.client --transport grpc --address "$HOST:30051" --csv data/telco_churn.csv --limit 5

step "[cluster: create job --from; e2e: both commands] run the drift check now (as a Job from the CronJob) and inside a running API pod"
kubectl -n "$NS" create job --from=cronjob/churn-drift churn-drift-now
kubectl -n "$NS" wait --for=condition=complete job/churn-drift-now --timeout=10m || true
kubectl -n "$NS" logs job/churn-drift-now | tail -n 1
kubectl -n "$NS" exec deploy/churn-api -- python -m monitoring.drift

step "[cluster: the re-apply; e2e: the registry commands] the registry, and a re-apply that must neither fail nor retrain"
kubectl -n "$NS" exec deploy/churn-api -- python -m training.registry list
kubectl apply -k kustomize/overlays/minikube
sleep 10
kubectl -n "$NS" exec deploy/churn-api -- python -m training.registry list
curl -s "http://$HOST:30080/model" | head -c 200; echo

step "tear down"
if [ "${KEEP:-0}" != "1" ]; then
  kubectl delete -k kustomize/overlays/minikube
  minikube stop
fi
