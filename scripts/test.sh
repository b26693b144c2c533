#!/usr/bin/env bash
# Runs every Trellis check and test. Installs what it needs first (Debian, as root).
#   scripts/test.sh
# Unit tests, real-etcd integration tests (each starts its own etcd on loopback ports), and the
# trellisctl end-to-end tests. Formatting and lints are checked first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
trellis_setup

trellis_log "cargo fmt --check"
cargo fmt --all -- --check
trellis_log "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
trellis_log "cargo test (unit + integration against real etcd)"
cargo test --workspace --all-features --locked 2>&1 | tee target/test.log
# Every binary prints a result line; refuse a run where nothing was executed.
passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' target/test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test.log | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored' target/test.log | awk '{s+=$1} END {print s+0}')
[ "$passed" -gt 0 ] || trellis_die "no test ran"
[ "$ignored" -eq 0 ] || trellis_die "$ignored tests are ignored; a skipped test is not a pass"
echo "$passed passed, $failed failed"
