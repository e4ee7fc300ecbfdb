#!/usr/bin/env bash
# The whole test suite, in one place: the README's second command and .ci/run both call this.
# Extra arguments go to pytest (e.g. tools/test.sh -k smuggling). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m pytest -q "$@"
