#!/usr/bin/env bash
# Runs every Trellis check and test. Installs what it needs first (Debian, as root).
#   scripts/test.sh
# Unit tests, real-etcd integration tests (each starts its own etcd on loopback ports), and the
# trellisctl end-to-end tests. Formatting and lints are checked first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
trellis_setup
# One clean build per run: incremental state would only add ~3 GB to target/.
export CARGO_INCREMENTAL=0
trellis_log "free disk for target/: $(df -h --output=avail . | tail -1 | tr -d ' ')"

trellis_log "cargo fmt --check"
cargo fmt --all -- --check
trellis_log "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# Tests named *needs_ipip_kernel* need the kernel's ipip module (they fail, naming it, without
# it). Probe in a throwaway namespace; on a kernel without ipip, skip them BY NAME and list them.
skip_args=()
skipped_names=""
probe_ns="trl-probe-$$"
ipip_answer=""
if ip netns add "$probe_ns" 2>/dev/null; then
    if ! ipip_answer=$(ip -n "$probe_ns" link add trl-probe type ipip 2>&1); then
        skip_args=(-- --skip needs_ipip_kernel)
    fi
    ip netns del "$probe_ns" 2>/dev/null || true
else
    trellis_die "cannot create the probe namespace $probe_ns (run as root)"
fi
if [ "${#skip_args[@]}" -gt 0 ]; then
    trellis_log "this kernel has no ipip support (ip link add type ipip: ${ipip_answer}); skipping tests named *needs_ipip_kernel*"
    skipped_names=$(cargo test --workspace --all-features --locked -- --list 2>/dev/null \
        | grep needs_ipip_kernel | sed 's/: test$//' || true)
fi
trellis_log "cargo test (unit + integration against real etcd)"
cargo test --workspace --all-features --locked "${skip_args[@]}" 2>&1 | tee target/test.log
# Every binary prints a result line; refuse a run where nothing was executed.
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' target/test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test.log | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored' target/test.log | awk '{s+=$1} END {print s+0}')
[ "$passed" -gt 0 ] || trellis_die "no test ran"
[ "$ignored" -eq 0 ] || trellis_die "$ignored tests are ignored; a skipped test is not a pass"
skipped=0
while IFS= read -r name; do
    [ -n "$name" ] || continue
    echo "SKIPPED (this kernel has no ipip): $name"
    skipped=$((skipped + 1))
done <<< "$skipped_names"
echo "$passed passed, $failed failed, $skipped skipped by name (no ipip)"
