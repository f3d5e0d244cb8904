#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run pytest; arguments go to pytest. Exits with pytest's
# status; "no tests collected" (5) is a failure too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" = 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$status"
