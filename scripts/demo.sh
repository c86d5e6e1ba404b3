#!/usr/bin/env bash
# The main job, on any fresh machine: install what is missing, then run the whole opswatch loop
# against a throwaway OpenSSH server on 127.0.0.1 (no droplet, no root needed beyond installing).
#
#   bash scripts/demo.sh            # scripted: edits files, checks the server copy, prints a report
#   bash scripts/demo.sh --watch    # interactive: you edit, opswatch syncs; Ctrl-C to stop
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SETUP_NAME=scripts/demo.sh
EXTRAS=""
# shellcheck source=setup.sh
source scripts/setup.sh
if [ "${1:-}" = "--watch" ]; then
    shift
    exec "$PY" -m opswatch demo "$@"
fi
exec "$PY" -m opswatch demo --script "$@"
