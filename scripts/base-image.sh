#!/usr/bin/env bash
# Pick the base image of churn-service and make sure it exists; print on stdout
#   <runtime base> <build base>
# for `make image`, which passes them to the Dockerfile (build args BASE_IMAGE, BUILD_BASE_IMAGE).
#
# - Runtime base: the official python:3.11-slim when it can be pulled; on a builder that cannot
#   reach a container registry (air-gapped, or our CI), a compatible stand-in built here from
#   Debian packages (Debian 12's python3 is 3.11), under a name of its own ($STANDIN), never under
#   the official name: nobody may mistake it for the upstream image. It holds Debian's own CA
#   bundle only, and no SSL_CERT_FILE/PIP_CERT.
# - Build base: the runtime base plus this machine's CA bundle, with SSL_CERT_FILE/PIP_CERT set.
#   Package downloads during the image build may go through a TLS-inspecting proxy whose CA is only
#   in this machine's bundle. Only the Dockerfile's first stage (the Python packages) uses it; the
#   shipped image copies the venv out of that stage, so no layer of it carries the bundle.
# Messages go to stderr.
set -euo pipefail
OFFICIAL="${BASE_IMAGE:-python:3.11-slim}"
STANDIN="${STANDIN_IMAGE:-churn-base/python:3.11-slim-debian}"
BUILD_BASE="${BUILD_BASE_IMAGE:-churn-base/python-build:3.11-slim}"
# Bump when the stand-in's recipe changes, so an old stand-in is rebuilt rather than reused.
RECIPE=2
HOST_CA=/etc/ssl/certs/ca-certificates.crt

# The official image sets PYTHON_VERSION; a stand-in imported as python:3.11-slim by an older
# version of this script did not (and carried this machine's CA bundle): never take that one.
official_present() {
  docker image inspect "$OFFICIAL" --format '{{range .Config.Env}}{{println .}}{{end}}' 2>/dev/null \
    | grep -q '^PYTHON_VERSION='
}

build_standin() {
  command -v debootstrap >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  # The machine's own Debian mirror (from its apt sources), so nothing here names a host.
  local mirror rootfs
  mirror=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}';
              cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '/^deb / {print $2}'; } \
            | grep -v security | head -n 1 || true)
  [ -n "$mirror" ] || { echo "error: no Debian mirror found in the apt sources" >&2; exit 1; }
  rootfs=$(mktemp -d /tmp/churn-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  # debootstrap downloads through this machine's apt (its proxy CA is trusted on the host); the
  # rootfs gets Debian's ca-certificates, whose bundle holds Debian's (Mozilla's) CAs only.
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >/dev/null
  rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
  # What a slim image leaves out (about 140 MB; the stand-in is 145 MB): the downloaded .debs and apt lists, locales,
  # docs and man pages. apt still works after an `apt-get update`.
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL org.opencontainers.image.description=\"python:3.11-slim stand-in built from Debian 12 packages by scripts/base-image.sh\" churn.base-recipe=\"$RECIPE\"" \
    - "$STANDIN" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
}

if official_present; then
  base="$OFFICIAL"
  echo "base image: $OFFICIAL (official, present)" >&2
elif timeout 120 docker pull "$OFFICIAL" >/dev/null 2>&1 && official_present; then
  base="$OFFICIAL"
  echo "base image: $OFFICIAL (official, pulled)" >&2
else
  base="$STANDIN"
  if [ "$(docker image inspect "$STANDIN" --format '{{index .Config.Labels "churn.base-recipe"}}' 2>/dev/null)" \
    = "$RECIPE" ]; then
    echo "base image: $STANDIN (cannot pull $OFFICIAL; Debian-built stand-in, present)" >&2
  else
    echo "cannot pull $OFFICIAL: building the stand-in $STANDIN from Debian packages" >&2
    build_standin
    echo "base image: $STANDIN (Debian-built stand-in, built now)" >&2
  fi
fi

# The build-only base: the chosen base plus this machine's CA bundle (cached by docker build).
ctx=$(mktemp -d /tmp/churn-build-base.XXXXXX)
cp "$HOST_CA" "$ctx/build-ca.crt"
docker build -q --network host --build-arg "BASE=$base" -t "$BUILD_BASE" -f - "$ctx" >/dev/null <<'EOF'
ARG BASE
FROM ${BASE}
COPY build-ca.crt /etc/ssl/build-ca.crt
ENV SSL_CERT_FILE=/etc/ssl/build-ca.crt PIP_CERT=/etc/ssl/build-ca.crt
EOF
rm -rf "$ctx"
echo "build stage base: $BUILD_BASE ($base + this machine's CA bundle; never shipped)" >&2
echo "$base $BUILD_BASE"
