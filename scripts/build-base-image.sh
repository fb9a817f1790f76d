#!/usr/bin/env bash
# Builds a small local base image from Debian packages with debootstrap + `docker import`:
# no registry involved. Generic: the runtime and the operator images can both build on it.
#
#   sudo scripts/build-base-image.sh [TAG]          (default TAG: ferry-base:bookworm-py311)
#
# Environment:
#   SUITE        Debian suite             (default: bookworm, whose python3 is 3.11)
#   MIRROR       Debian mirror            (default: http://deb.debian.org/debian)
#   SECURITY     security mirror, "" to skip the upgrade (default: http://deb.debian.org/debian-security)
#   PACKAGES     comma-separated extras   (default: python3,python3-venv,ca-certificates,tini)
#   FORCE=1      rebuild even when TAG already exists
# Needs root (debootstrap), debootstrap, and a container engine (see scripts/docker-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/docker-engine.sh
source scripts/docker-engine.sh

TAG=${1:-ferry-base:bookworm-py311}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SECURITY-http://deb.debian.org/debian-security}
PACKAGES=${PACKAGES:-python3,python3-venv,ca-certificates,tini}

ferry_ensure_engine
if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  ferry_log "$TAG exists (FORCE=1 rebuilds it)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  ferry_log "debootstrap needs root"
  exit 1
fi
command -v debootstrap >/dev/null || { ferry_log "apt-get install -y debootstrap"; exit 1; }

started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-base.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
  mountpoint -q "$rootfs/proc" 2>/dev/null && umount "$rootfs/proc"
  rm -rf "$work"
}
trap cleanup EXIT

ferry_log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }

{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$rootfs/etc/apt/sources.list"
if [ -n "$SECURITY" ]; then
  ferry_log "applying $SUITE-updates and $SUITE-security"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update -qq && apt-get -y -qq upgrade' >"$work/upgrade.log" 2>&1 \
    || { tail -n 40 "$work/upgrade.log" >&2; exit 1; }
  umount "$rootfs/proc"
fi

ferry_log "trimming caches, docs and logs"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
find "$rootfs" -name '__pycache__' -prune -exec rm -rf {} +
: >"$rootfs/etc/machine-id"
python_version=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')

ferry_log "importing as $TAG"
tar --numeric-owner --xattrs -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.opencontainers.image.title=ferry-base org.opencontainers.image.description=\"Debian $SUITE minbase, Python $python_version, tini\" org.opencontainers.image.base.name=debian:$SUITE" \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
size=$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")
ferry_log "built $TAG (Python $python_version, $((size / 1024 / 1024)) MiB) in $((SECONDS - started))s"
