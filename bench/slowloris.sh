#!/usr/bin/env bash
# Runs bench/slowloris.pl with enough descriptors for 1,100+ connections on
# each side. Arguments are passed on (e.g. --blib /tmp/baseline/blib).
set -euo pipefail
want=8192
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want"
fi
exec perl "$(dirname "$0")/slowloris.pl" "$@"
