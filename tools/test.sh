#!/usr/bin/env bash
# The whole test suite, in one place: the README's second command, and what .ci/run calls.
#
#   bash tools/test.sh --install   # as root on a fresh Debian machine: apt packages, a virtualenv with the
#                                  # project and its test extra, the Cython build, then the whole suite
#   bash tools/test.sh             # the suite only, with the current python (everything already installed)
#
# Other arguments go to pytest (e.g. tools/test.sh -k smuggling). The suite fails if anything was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

if [ "${1:-}" = "--install" ]; then
    shift
    step "apt packages"
    export DEBIAN_FRONTEND=noninteractive
    # Debian starts a daemon when its package is installed unless policy-rc.d says no (exit 101);
    # nginx would then hold port 80. Keep any policy already there, else add one for this run only.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        build-essential python3 python3-dev python3-venv wrk nginx haproxy procps
    # On a machine that runs systemd and had them already installed and started, stop them.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl stop nginx haproxy 2>/dev/null || true
    fi

    step "virtualenv and install"
    venv="${VENV:-${TMPDIR:-/tmp}/fastproxy-venv}"
    python3 -m venv "$venv"
    export PATH="$venv/bin:$PATH"
    python -m pip install -q --upgrade pip 'setuptools>=68' wheel 'cython>=3.0'
    python -m pip install -q -e '.[test]'

    step "build the Cython modules (the debug build: leak tests count live objects)"
    FASTPROXY_DEBUG=1 python setup.py -q build_ext --inplace --force
fi

step "tests"
log=$(mktemp)
set +e
"${PYTHON:-python}" -m pytest -q -rs "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    rm -f "$log"
    echo "tests failed (exit $status)" >&2
    exit "$status"
fi
if tail -n 5 "$log" | grep -q ' skipped'; then
    rm -f "$log"
    echo "tests were skipped: the suite runs everything" >&2
    exit 1
fi
rm -f "$log"
