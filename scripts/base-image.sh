#!/usr/bin/env bash
# Make sure the base image BentoML's generated Dockerfile starts FROM (python:3.11-slim) exists.
# Use the official image when it can be pulled; on a builder that cannot reach a container
# registry (air-gapped, or our CI), build a compatible one from Debian packages instead:
# Debian 12's python3 is 3.11, and the Dockerfile only needs python3, pip, venv and CA certs.
# BentoML's Dockerfile stays unchanged either way.
set -euo pipefail
IMAGE="${BASE_IMAGE:-python:3.11-slim}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE present" >&2
  exit 0
fi
if timeout 120 docker pull "$IMAGE" >/dev/null 2>&1; then
  echo "pulled $IMAGE" >&2
  exit 0
fi
echo "cannot pull $IMAGE: building a stand-in from Debian packages" >&2
command -v debootstrap >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
# The machine's own Debian mirror (from its apt sources), so nothing here names a host.
mirror=$( { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}';
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '/^deb / {print $2}'; } \
          | grep -v security | head -n 1 || true)
[ -n "$mirror" ] || { echo "error: no Debian mirror found in the apt sources" >&2; exit 1; }
rootfs=$(mktemp -d /tmp/churn-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null
rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
# Package downloads during the image build may go through a TLS-inspecting proxy whose CA is only
# in this machine's bundle: carry the bundle into the image.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
tar -C "$rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  - "$IMAGE" >/dev/null
echo "built stand-in $IMAGE from Debian packages" >&2
