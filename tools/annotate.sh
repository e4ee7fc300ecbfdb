#!/bin/sh
# Writes cython -a annotations of the hot modules to build/annotate/*.html (yellow lines touch Python).
# The per-request functions (parsers, writers, the epoll loop's handlers) should show none.
# Usage: tools/annotate.sh [module.pyx ...]   (default: the data path: _http _transport _loop _core _timers _pool)
set -eu
cd "$(dirname "$0")/.."
out=build/annotate
mkdir -p "$out"
[ "$#" -gt 0 ] || set -- fastproxy/_http.pyx fastproxy/_transport.pyx fastproxy/_loop.pyx fastproxy/_core.pyx \
    fastproxy/_timers.pyx fastproxy/_pool.pyx
for pyx in "$@"; do
    [ -f "$pyx" ] || { echo "skip $pyx (missing)"; continue; }
    name=$(basename "$pyx" .pyx)
    # same directives as setup.py; -I . so cimports of fastproxy.* resolve
    cython -3 -a -I . \
        -X boundscheck=False -X wraparound=False -X cdivision=True -X initializedcheck=False \
        -o "$out/$name.c" "$pyx"
    echo "$out/$name.html"
done
