#!/usr/bin/env bash
# The Trellis demo: a 3-node cluster in network namespaces (trellis-lab), pods on every node
# wired by the trellis CNI plugin, all-pairs ping across VXLAN, iperf3 between nodes next to
# the underlay's own throughput, an agent crash that loses no packet, a live switch from VXLAN
# to plain routes that loses none either, IPAM shown and checked, a NetworkPolicy enforced on
# real connections and explained by `policy trace`, a bad resource rejected. Removes everything
# at the end.
#   scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh
trellis_setup

trellis_log "building the workspace (release)"
cargo build --release --locked -q --workspace
LAB="$PWD/target/release/trellis-lab"
NAME=demo$$
trap '"$LAB" down "$NAME" >/dev/null 2>&1 || true' EXIT

step() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
show() {
    printf '$ %s\n' "$*"
    "$@"
}

step "a 3-node dual-stack lab: underlay + etcd namespace, one namespace per node running trellis-agent"
show "$LAB" up --name "$NAME" --nodes 3 --dual-stack

step "two pods per node, each wired by the trellis CNI plugin"
for n in 1 2 3; do
    for p in 1 2; do
        "$LAB" pod add "$NAME" "node-$n" "default/web-$n$p"
    done
done

step "all-pairs ping (IPv4; cross-node traffic goes through vxlan.trellis)"
mapfile -t PODS < <("$LAB" status "$NAME" | awk '/^pod/ {print $2, $5}')
printf '%-16s' ""
for t in "${PODS[@]}"; do printf '%-16s' "${t%% *}"; done
echo
fail=0
for f in "${PODS[@]}"; do
    printf '%-16s' "${f%% *}"
    for t in "${PODS[@]}"; do
        if [ "$f" = "$t" ]; then printf '%-16s' "-"; continue; fi
        if "$LAB" pod exec "$NAME" "${f%% *}" -- ping -c1 -W2 "${t##* }" >/dev/null 2>&1; then
            printf '%-16s' "ok"
        else
            printf '%-16s' "FAIL"; fail=1
        fi
    done
    echo
done
[ "$fail" = 0 ] || trellis_die "some pods cannot reach each other"

step "iperf3: pod on node-1 -> pod on node-2 (VXLAN), and node-1 -> node-2 (the underlay itself)"
"$LAB" pod exec "$NAME" default/web-21 -- iperf3 -s -1 -D
"$LAB" node exec "$NAME" node-2 -- iperf3 -s -1 -D
sleep 0.5
dst_pod=$("$LAB" status "$NAME" | awk '$2 == "default/web-21" {print $5}')
pod_bps=$("$LAB" pod exec "$NAME" default/web-11 -- iperf3 -c "$dst_pod" -t 3 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
node_bps=$("$LAB" node exec "$NAME" node-1 -- iperf3 -c 172.30.0.2 -t 3 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
python3 -c "p=$pod_bps; n=$node_bps; print(f'pod-to-pod {p/1e9:.2f} Gbit/s, node-to-node {n/1e9:.2f} Gbit/s, ratio {p/n:.2f}')"

step "kill -9 the agent on node-1 while web-11 pings web-21 every 0.2 s"
"$LAB" pod exec "$NAME" default/web-11 -- ping -i 0.2 -c 20 -W 1 "$dst_pod" | tail -2 &
pinger=$!
sleep 1
show "$LAB" node restart "$NAME" node-1 --hard
wait "$pinger"

step "switching the pools to no encapsulation, live, while web-11 pings web-21 every 0.05 s"
route() { "$LAB" node exec "$NAME" node-1 -- ip route get "$dst_pod" | head -1; }
printf 'node-1 route to web-21 before: %s\n' "$(route)"
"$LAB" pod exec "$NAME" default/web-11 -- ping -i 0.05 -c 80 -W 1 "$dst_pod" | tail -2 &
pinger=$!
sleep 1
"$LAB" ctl "$NAME" -- apply -f - <<'YAML'
apiVersion: trellis.dev/v1
kind: IPPool
metadata: {name: default-ipv4}
spec: {cidr: 10.244.0.0/16, vxlanMode: Never, natOutgoing: true}
---
apiVersion: trellis.dev/v1
kind: IPPool
metadata: {name: default-ipv6}
spec: {cidr: 'fd00:244::/64', vxlanMode: Never}
YAML
wait "$pinger"
printf 'node-1 route to web-21 after:  %s\n' "$(route)"

step "the datastore's view"
show "$LAB" ctl "$NAME" -- get workloadendpoints -A
show "$LAB" ctl "$NAME" -- ipam show --show-blocks
show "$LAB" ctl "$NAME" -- ipam check

step "NetworkPolicy: web-21 serves TCP 80 to pods labelled role=client only"
"$LAB" pod serve "$NAME" default/web-21 --tcp 80 >/dev/null
show "$LAB" ctl "$NAME" -- label pod default/web-21 app=web
show "$LAB" ctl "$NAME" -- label pod default/web-11 role=client
show "$LAB" ctl "$NAME" -- apply -f - <<'YAML'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: 80}]
YAML
probe() { # FROM: exit 0 when it connects to web-21:80 within 1 s
    "$LAB" pod exec "$NAME" "$1" -- "$LAB" probe connect --proto tcp --to "$dst_pod:80" --timeout-ms 1000 >/dev/null 2>&1
}
for from in default/web-11 default/web-12 default/web-31; do
    # The agents apply the policy within moments; wait for the first verdict to settle.
    want=$([ "$from" = default/web-11 ] && echo allowed || echo denied)
    got=denied
    for _ in $(seq 1 20); do
        if probe "$from"; then got=allowed; else got=denied; fi
        [ "$got" = "$want" ] && break
        sleep 0.25
    done
    printf '%-16s -> default/web-21 tcp/80: %s\n' "$from" "$got"
    [ "$got" = "$want" ] || trellis_die "$from: expected $want, the probe says $got"
done
show "$LAB" ctl "$NAME" -- policy trace --from default/web-12 --to default/web-21 --port 80/TCP

step "a bad resource is rejected with the field named, and nothing changes"
"$LAB" ctl "$NAME" -- apply -f - <<'YAML' && trellis_die "the bad pool was accepted"
apiVersion: trellis.dev/v1
kind: IPPool
metadata: {name: broken}
spec: {cidr: 10.244.128.0/17, blockSize: 40}
YAML

step "tearing down"
show "$LAB" down "$NAME"
trap - EXIT
echo "done: no namespace of the demo is left ($(ip netns list | grep -c "^tl-$NAME" || true) remaining)"
