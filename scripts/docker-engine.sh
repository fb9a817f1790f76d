#!/usr/bin/env bash
# Sourced by the image build scripts: makes sure a container engine answers, else starts a
# private dockerd (Debian's docker.io) and exports DOCKER_HOST for it.
#
#   source scripts/docker-engine.sh && ferry_ensure_engine
#
# Environment:
#   DOCKER              engine CLI (default: docker; podman works for build/run as well)
#   FERRY_DOCKER_ROOT   data root of the private dockerd   (default: /var/lib/ferry-docker)
#   FERRY_DOCKER_RUN    socket, pid file and exec root      (default: /run/ferry-docker)
# The private dockerd runs with --bridge=none --iptables=false: builds use --network none
# and containers use --network host, so it never touches the host's firewall or bridges.
# It keeps running after the script so later builds and the image test reuse it; stop it
# with: kill "$(cat /run/ferry-docker/dockerd.pid)"

DOCKER=${DOCKER:-docker}
FERRY_DOCKER_ROOT=${FERRY_DOCKER_ROOT:-/var/lib/ferry-docker}
FERRY_DOCKER_RUN=${FERRY_DOCKER_RUN:-/run/ferry-docker}

ferry_log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

ferry_engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

ferry_ensure_engine() {
  if ! command -v "$DOCKER" >/dev/null 2>&1; then
    ferry_log "no '$DOCKER' CLI; install one: apt-get install -y docker.io (or set DOCKER=podman)"
    return 1
  fi
  if ferry_engine_answers; then
    return 0
  fi
  local socket="$FERRY_DOCKER_RUN/docker.sock"
  if [ -S "$socket" ] && DOCKER_HOST="unix://$socket" "$DOCKER" info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$socket"
    return 0
  fi
  if [ "$DOCKER" != docker ]; then
    ferry_log "'$DOCKER' does not answer: start it yourself"
    return 1
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    ferry_log "no engine is running and dockerd is missing: apt-get install -y docker.io"
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    ferry_log "no engine is running; starting a private dockerd needs root"
    return 1
  fi
  mkdir -p "$FERRY_DOCKER_ROOT" "$FERRY_DOCKER_RUN"
  ferry_log "starting a private dockerd (data root $FERRY_DOCKER_ROOT, socket $socket)"
  # The daemon outlives this shell: it must not inherit descriptors beyond stdio (a caller's
  # `flock FILE make …` lock, a pipe a test reads to EOF), or it would hold them until it exits.
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid dockerd \
      --host "unix://$socket" \
      --data-root "$FERRY_DOCKER_ROOT" \
      --exec-root "$FERRY_DOCKER_RUN/exec" \
      --pidfile "$FERRY_DOCKER_RUN/dockerd.pid" \
      --bridge=none --iptables=false --ip6tables=false
  ) >"$FERRY_DOCKER_RUN/dockerd.log" 2>&1 </dev/null &
  local waited=0
  until DOCKER_HOST="unix://$socket" "$DOCKER" info >/dev/null 2>&1; do
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -ge 60 ]; then
      ferry_log "dockerd did not answer within 60s; its log:"
      tail -n 30 "$FERRY_DOCKER_RUN/dockerd.log" >&2 || true
      return 1
    fi
  done
  export DOCKER_HOST="unix://$socket"
}
