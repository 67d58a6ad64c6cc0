#!/usr/bin/env bash
# A Docker engine the way these machines allow it (STACK.md): Debian's docker.io, dockerd as root
# with no bridge and no iptables (containers use the host's network, on loopback), its data and
# exec roots in a folder of ours, the socket for root only. Idempotent: an engine that answers is
# left alone. Prints the DOCKER_HOST to use.
#
#   build-support/docker_up.sh          start (installing docker.io if it is missing)
#   build-support/docker_up.sh down     stop it (images stay, in the data root)
set -euo pipefail
ROOT="${PHLO_DOCKER_ROOT:-/var/lib/phlo-docker}"
SOCK="$ROOT/docker.sock"
export DOCKER_HOST="unix://$SOCK"

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [ "${1:-up}" = "down" ]; then
    pid=$(cat "$ROOT/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        # Until the process is gone (it stops answering before it has exited).
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    # dockerd can leave its network namespace mounted (STACK.md).
    umount "$ROOT/exec/netns/default" 2>/dev/null || true
    echo "docker engine stopped"
    exit 0
fi

# The engine, debootstrap for the base image (phlo_core.services.images) and Debian's
# docker-compose for `phlo deploy compose`.
# (Installed by root only: a user who can reach a running engine needs none of them.)
if [ "$(id -u)" = 0 ] && { ! command -v dockerd >/dev/null \
    || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; }; then
    echo "docker_up: installing Debian's docker.io, debootstrap and docker-compose" >&2
    apt-get install -y -qq docker.io debootstrap docker-compose >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq docker.io debootstrap docker-compose >/dev/null
    }
fi

if answers; then
    echo "DOCKER_HOST=$DOCKER_HOST"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "docker_up: dockerd runs as root here; run it as root" >&2
    exit 2
fi
mkdir -p "$ROOT/data" "$ROOT/exec"
# A pid file whose process is gone (a killed engine, a rebooted machine) would stop dockerd.
if [ -f "$ROOT/dockerd.pid" ] && ! kill -0 "$(cat "$ROOT/dockerd.pid")" 2>/dev/null; then
    rm -f "$ROOT/dockerd.pid"
fi
chmod 700 "$ROOT"
umount "$ROOT/exec/netns/default" 2>/dev/null || true
# --group root: only root reaches the socket (whoever reaches it is root on this machine).
setsid dockerd --host "$DOCKER_HOST" --group root \
    --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/dockerd.pid" \
    --bridge=none --iptables=false --ip6tables=false \
    >>"$ROOT/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 150); do
    if answers; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        exit 0
    fi
    sleep 0.2
done
echo "docker_up: dockerd did not answer in 30 s; its log: $ROOT/dockerd.log" >&2
tail -5 "$ROOT/dockerd.log" >&2
exit 1
