#!/usr/bin/env bash
# README command 1: set up this machine (RabbitMQ from Debian, .venv) and run the main job:
# RabbitMQ, the EG emulator and eg-bridge in the background, sample messages published, the
# events the emulator received printed. The stack keeps running: `scripts/demo.sh down` stops
# it, `scripts/demo.sh status` shows the bridge's /status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/python scripts/stack.py "${1:-up}"
