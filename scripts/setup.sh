#!/usr/bin/env bash
# Prepare this checkout to run the test suite: RabbitMQ from Debian and the .venv.
# Idempotent; installing packages needs root (Debian 12, Python 3.11).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Run quietly; on failure show what the command said.
quiet() {
    if ! "$@" >"$log" 2>&1; then
        echo "setup.sh: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

packages=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || packages+=(rabbitmq-server)
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip' 2>/dev/null; then
    packages+=(python3-venv)
fi

if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: ${packages[*]} missing; run this script as root to install" >&2
        exit 1
    fi
    echo "setup.sh: installing ${packages[*]}"
    # The tests start their own nodes: keep the package's init script from starting the system
    # broker (its postinst runs invoke-rc.d start, which fails the install if the start fails).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f "$log" /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends "${packages[@]}"
    if [[ " ${packages[*]} " == *" rabbitmq-server "* ]]; then
        # Where a service manager started the system broker anyway, stop and disable it.
        if [ -d /run/systemd/system ]; then
            systemctl disable --now rabbitmq-server.service >/dev/null 2>&1 || true
        elif /etc/init.d/rabbitmq-server status >/dev/null 2>&1; then
            /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
            update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
        fi
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: creating .venv"
    quiet python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.eg-bridge-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup.sh: installing eg-bridge[dev,rocketmq] into .venv"
    quiet .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,rocketmq]'
    echo "$want" >"$stamp"
fi
# The native librocketmq for the RocketMQ extra (checksummed; a no-op once in place).
quiet .venv/bin/python -m bridge.consumers.rocketmq_install --quiet
