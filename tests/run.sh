#!/usr/bin/env bash
# The test command: prepares this machine when something is missing (OpenSSH's server and client,
# Python, the package with its test extras), then lint, format check, type check and pytest.
#
#   bash tests/run.sh [pytest arguments…]
# The set-up itself lives in scripts/setup.sh, shared with the demo command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SETUP_NAME=tests/run.sh
EXTRAS=test
# shellcheck source=../scripts/setup.sh
source scripts/setup.sh

lint_paths=()
for folder in src tests bench; do
    if [ -d "$folder" ]; then lint_paths+=("$folder"); fi
done
"$PY" -m ruff check "${lint_paths[@]}"
"$PY" -m ruff format --check "${lint_paths[@]}"
"$PY" -m mypy
"$(dirname "$PY")/lint-imports" --no-cache

status=0
"$PY" -m pytest "$@" || status=$?
if [ "$status" = 5 ]; then
    say "pytest collected no tests: that is a failure here"
    exit 1
fi
exit "$status"
