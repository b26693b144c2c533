#!/usr/bin/env bash
# The Trellis demo (issue 2 stage: the datastore and IPAM; pods and networking come next).
#   scripts/demo.sh
# Starts a private etcd on loopback, applies a dual-stack cluster, allocates addresses for pods
# on three nodes as the agents will, shows IPAM, rejects a bad file, then simulates a node dying
# mid-ADD and lets `ipam check` find and `ipam gc` clean the leak. Removes everything at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
trellis_setup

trellis_log "building trellisctl (release)"
cargo build --release --locked -q -p trellisctl
ctl_bin="$PWD/target/release/trellisctl"

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

work=$(mktemp -d /tmp/trellis-demo.XXXXXX)
client=$(free_port)
peer=$(free_port)
etcd --name demo --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "demo=http://127.0.0.1:$peer" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
cleanup() {
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export TRELLIS_ETCD_ENDPOINTS="http://127.0.0.1:$client"
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$TRELLIS_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
ETCDCTL_API=3 etcdctl --endpoints "$TRELLIS_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 \
    || trellis_die "etcd did not start: $(tail -5 "$work/etcd.log")"

step() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
ctl() {
    printf '$ trellisctl %s\n' "$*"
    "$ctl_bin" "$@"
}

step "etcd $(etcd --version | head -1 | awk '{print $3}') on $TRELLIS_ETCD_ENDPOINTS; applying the cluster"
ctl apply -f scripts/demo/cluster.yaml
ctl get ippools -o wide
ctl get nodes -o wide

step "allocating one IPv4 and one IPv6 address for 4 pods on each of 3 nodes, writing their endpoints"
for n in 1 2 3; do
    for p in 1 2 3 4; do
        handle="c$n$p.eth0"
        ips=$("$ctl_bin" ipam assign --node "node-$n" --handle "$handle" --ipv4 1 --ipv6 1 --pod "default/pod-$n-$p" | awk '{print $2}')
        nets=$(for ip in $ips; do case $ip in *:*) echo "  - $ip/128" ;; *) echo "  - $ip/32" ;; esac; done)
        echo "node-$n pod-$n-$p:" $ips
        "$ctl_bin" apply -f - >/dev/null <<YAML
apiVersion: trellis.dev/v1
kind: WorkloadEndpoint
metadata: {name: node-$n-k8s-pod--$n--$p-eth0, namespace: default}
spec:
  node: node-$n
  pod: pod-$n-$p
  endpoint: eth0
  containerID: c$n$p
  interfaceName: trellisc$n$p
  handleID: $handle
  ipNetworks:
$nets
YAML
    done
done
ctl get workloadendpoints -A
ctl ipam show --show-blocks

step "a bad file is rejected with the fields named, and nothing is written"
ctl apply -f scripts/demo/bad-pool.yaml && trellis_die "the bad file was accepted"
ctl get ippools

step "node-2 dies between allocating and writing its endpoint: check finds the leak, gc cleans it"
ctl ipam assign --node node-2 --handle crashed.eth0 --ipv4 1 --pod default/crashed
ctl ipam check && trellis_die "the leak was not found"
ctl ipam gc --grace-period 0
ctl ipam check

step "done: the datastore and IPAM work; etcd and $work are removed on exit"
