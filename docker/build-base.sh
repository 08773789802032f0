#!/usr/bin/env bash
# Make the base image socklab/base:bookworm once, without any container registry if need be.
#
# 1. debian:bookworm-slim already present or pullable: tag it; the Dockerfile installs docker/packages.txt.
# 2. otherwise: debootstrap a minbase Debian bookworm with docker/packages.txt included, then docker import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${BASE_IMAGE:-socklab/base:bookworm}
suite=${DEBIAN_SUITE:-bookworm}

# A root directory of mode 0755: under the vfs storage driver (Docker-in-Docker swarm nodes, some hosts) the
# image's root keeps the tarball's "./" mode, and debootstrap's 0700 lets no non-root user exec anything.
root_label=socklab.base.root-mode
if docker image inspect "$base" >/dev/null 2>&1; then
  comment=$(docker image inspect --format '{{.Comment}}' "$base")
  mode=$(docker image inspect --format "{{index .Config.Labels \"$root_label\"}}" "$base" 2>/dev/null || true)
  if [[ $comment != Imported* || $mode == 0755 ]]; then
    echo "base image $base present"
    exit 0
  fi
  echo "base image $base was imported with a 0700 root directory: building it again"
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
run_root chmod 0755 "$root"  # the tarball's "./": mktemp made it 0700
run_root tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
  -c "LABEL $root_label=0755" - "$base" >/dev/null
echo "base image $base built in $(( $(date +%s) - start )) s"
