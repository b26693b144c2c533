#!/usr/bin/env bash
# Removes what crashed test runs left behind: network namespaces named with the test prefixes
# (trl-*) and trellis-lab's namespaces (tl-*), with any process still running inside them,
# and the labs' state under /run/trellis-lab. Touches nothing else; the root namespace
# is never changed. Safe to run at any time no test is running.
#   scripts/cleanup.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: run as root" >&2; exit 1; }
removed=0
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(trl|tl)-' || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -9 "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" && removed=$((removed + 1))
done
rm -rf /run/trellis-lab
echo "removed $removed network namespaces"
