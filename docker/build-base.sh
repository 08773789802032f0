#!/usr/bin/env bash
# Make the base image socklab/base:bookworm once, without any container registry if need be.
#
# 1. debian:bookworm-slim already present or pullable: tag it; the Dockerfile installs docker/packages.txt.
# 2. otherwise: debootstrap a minbase Debian bookworm with docker/packages.txt included, then docker import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${BASE_IMAGE:-socklab/base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}

if docker image inspect "$base" >/dev/null 2>&1; then
  echo "base image $base present"
  exit 0
fi
if docker image inspect debian:bookworm-slim >/dev/null 2>&1 || docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
  docker tag debian:bookworm-slim "$base"
  echo "base image $base tagged from debian:bookworm-slim"
  exit 0
fi

echo "no registry: building $base from Debian packages with debootstrap"
if ! command -v debootstrap >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "debootstrap is missing; run: sudo apt-get install debootstrap" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
run_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
root=$(mktemp -d /tmp/socklab-rootfs.XXXXXX)
trap 'run_root rm -rf "$root"' EXIT
start=$(date +%s)
packages=$(grep -v '^#' "$here/packages.txt" | paste -sd, -)
run_root debootstrap --variant=minbase --include="$packages" "$suite" "$root" >/tmp/socklab-debootstrap.log 2>&1 \
  || { tail -20 /tmp/socklab-debootstrap.log >&2; exit 1; }
run_root chroot "$root" apt-get clean
run_root rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
run_root tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
echo "base image $base built in $(( $(date +%s) - start )) s"
