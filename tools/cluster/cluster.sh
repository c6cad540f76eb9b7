#!/usr/bin/env bash
# A real Kubernetes v1.34 control plane on loopback, for tests/cluster and for trying the manifests:
# etcd, kube-apiserver (default admission plugins, PodSecurity included; RBAC; service-account
# keys), kube-controller-manager, kube-scheduler, and kwok playing the nodes of a topology
# (topologies/*.yaml) and their pods' lifecycle. No container runs.
#
#   tools/cluster/cluster.sh up [minikube|production]   start (a no-op if it already runs)
#   tools/cluster/cluster.sh down                       stop every process it started, remove the state
#   tools/cluster/cluster.sh status                     exit 0 if it runs and answers
#
# State, logs and the kubeconfig live in $CLUSTER_DIR (default .cluster/ in the checkout, ignored by
# git): `kubectl --kubeconfig .cluster/kubeconfig get nodes`. Ports are picked free at each start.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tools/cluster"
dir=${CLUSTER_DIR:-$root/.cluster}
# kubectl v1.34.0, built with the control plane (build.sh): the newest kubectl on PyPI (1.36 and
# later) is outside kubectl's supported skew of one minor version against a v1.34 API server.
KUBECTL=${KUBECTL:-}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

die() { echo "error: $*" >&2; exit 2; }
log() { echo "cluster: $*" >&2; }
kc() { "${KUBECTL:=$("$here/build.sh")/kubectl}" --kubeconfig "$dir/kubeconfig" "$@"; }

# The PID in run/NAME.pid, if that process is alive and is ours (its command line names $dir, so a
# recycled PID is never taken for it).
pid_of() {
  local f="$dir/run/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  echo "$pid"
}

running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  kc get --raw /readyz >/dev/null 2>&1
}

start() {  # start NAME ARGS...: in its own session, logging to logs/NAME.log
  local name=$1; shift
  setsid "$bin/$name" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/run/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what=$1 seconds=$2 i; shift 2
  for ((i = 0; i < seconds * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "$what did not come up within ${seconds}s; the last lines of its log:"
  tail -n 20 "$dir/logs/$what.log" >&2 2>/dev/null || true
  return 1
}

# Free ports below the kernel's ephemeral range (what binding port 0 returns could be taken by an
# outgoing connection before the component binds it; tests/support.py free_port does the same).
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randint(max(1024, lo - 12000), lo - 1)))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(s.getsockname()[1])
print(*ports)
EOF
}

certs() {  # a CA, the API server's serving certificate, client certificates, service-account keys
  local pki="$dir/pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=churn-mlops-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  cert() {  # cert NAME SUBJECT [SAN]
    local ext="$pki/$1.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' >"$ext"
    if [ -n "${3:-}" ]; then
      printf 'extendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$3" >>"$ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >>"$ext"
    fi
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 30 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=kubernetes-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kwok "/O=system:masters/CN=kwok-controller"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

kubeconfig() {  # kubeconfig FILE USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: churn-mlops-test
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $dir/pki/ca.crt
users:
  - name: $2
    user:
      client-certificate: $dir/pki/$2.crt
      client-key: $dir/pki/$2.key
contexts:
  - name: churn-mlops-test
    context: {cluster: churn-mlops-test, user: $2}
current-context: churn-mlops-test
EOF
}

up() {
  local topology=${1:-minikube}
  [ -f "$here/topologies/$topology.yaml" ] || die "unknown topology '$topology' (one of: $(cd "$here/topologies" && ls | sed 's/\.yaml$//' | xargs))"
  command -v openssl >/dev/null || die "openssl not found"
  if running; then
    local now; now=$(cat "$dir/topology")
    [ "$now" = "$topology" ] || die "a cluster with the $now topology runs in $dir: tools/cluster/cluster.sh down first"
    log "already running ($topology): $dir/kubeconfig"
    return 0
  fi
  [ ! -e "$dir" ] || down
  bin=$("$here/build.sh")
  KUBECTL=${KUBECTL:-$bin/kubectl}
  [ -x "$KUBECTL" ] || die "kubectl not found at $KUBECTL"
  local t0=$SECONDS
  mkdir -p "$dir/logs" "$dir/run" "$dir/etcd"
  echo "$topology" >"$dir/topology"
  read -r etcd_port peer_port api_port kcm_port sched_port kwok_port < <(free_ports 6)
  certs
  kubeconfig "$dir/kubeconfig" admin
  kubeconfig "$dir/controller-manager.conf" controller-manager
  kubeconfig "$dir/scheduler.conf" scheduler
  kubeconfig "$dir/kwok.conf" kwok

  start etcd --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --quota-backend-bytes 1073741824
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health" || { down; die "etcd did not start"; }

  # As kubeadm (minikube's bootstrapper) starts it: the default admission plugins (PodSecurity,
  # ServiceAccount, Priority, DefaultStorageClass, ...) plus NodeRestriction, Node and RBAC
  # authorization, privileged containers allowed by the server (Pod Security decides per namespace).
  start kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/pki/sa.pub" --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/12 --service-node-port-range 30000-32767 \
    --profiling=false --endpoint-reconciler-type none
  wait_for kube-apiserver 90 kc get --raw /readyz || { down; die "kube-apiserver did not start"; }

  start kube-controller-manager --kubeconfig "$dir/controller-manager.conf" \
    --authentication-kubeconfig "$dir/controller-manager.conf" --authorization-kubeconfig "$dir/controller-manager.conf" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --use-service-account-credentials=true --root-ca-file "$dir/pki/ca.crt" \
    --service-account-private-key-file "$dir/pki/sa.key" \
    --cluster-signing-cert-file "$dir/pki/ca.crt" --cluster-signing-key-file "$dir/pki/ca.key" \
    --controllers '*,bootstrapsigner,tokencleaner' --profiling=false
  start kube-scheduler --kubeconfig "$dir/scheduler.conf" \
    --authentication-kubeconfig "$dir/scheduler.conf" --authorization-kubeconfig "$dir/scheduler.conf" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --profiling=false
  start kwok --kubeconfig "$dir/kwok.conf" --config "$here/kwok.yaml" \
    --server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" \
    --tls-cert-file "$dir/pki/kwok.crt" --tls-private-key-file "$dir/pki/kwok.key"
  wait_for kube-controller-manager 60 curl -sfk "https://127.0.0.1:$kcm_port/healthz" || { down; die "kube-controller-manager did not start"; }
  wait_for kube-scheduler 60 curl -sfk "https://127.0.0.1:$sched_port/healthz" || { down; die "kube-scheduler did not start"; }

  # The topology: pods need their namespace's default ServiceAccount, which the controller manager
  # creates a moment after it starts.
  wait_for kube-controller-manager 60 kc -n kube-system get serviceaccount default || { down; die "no default ServiceAccount"; }
  kc apply -f "$here/topologies/$topology.yaml" >"$dir/logs/topology.log" 2>&1 ||
    { cat "$dir/logs/topology.log" >&2; down; die "the $topology topology was refused"; }
  wait_for kwok 60 kc wait --for=condition=Ready node --all --timeout=1s || { down; die "nodes not Ready"; }
  log "up in $((SECONDS - t0)) s ($topology): export KUBECONFIG=$dir/kubeconfig"
}

down() {
  [ -e "$dir" ] || return 0
  local c pid pids=()
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then pids+=("$pid"); fi
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "${pids[@]}" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$dir"
  log "down"
}

case "${1:-}" in
  up) up "${2:-minikube}" ;;
  down) down ;;
  status) running ;;
  *) die "usage: $0 up [minikube|production] | down | status" ;;
esac
