# Shared set-up for the README's commands: installs what Trellis needs on a fresh Debian
# machine, idempotently (only what is missing), and makes cargo reachable.
# Sourced, not run: `. scripts/lib/setup.sh; trellis_setup`.

trellis_log() { printf '==> %s\n' "$*" >&2; }

trellis_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Debian packages providing each command the project runs.
trellis_apt_needs() {
    local need=()
    command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
    command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler) # etcd-client's build script
    command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
    command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
    command -v ip >/dev/null 2>&1 || need+=(iproute2)     # tests build namespaces and veths
    command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
    command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
    command -v nft >/dev/null 2>&1 || need+=(nftables)
    # Debian's reference CNI plugins: delegated IPAM in tests, the baseline in bench/cni.
    [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
    command -v bridge >/dev/null 2>&1 || need+=(iproute2)
    # lab/tests/containerd_netns.rs: a real CNI client (ctr run --cni) chaining trellis with portmap.
    command -v containerd >/dev/null 2>&1 || need+=(containerd)
    command -v runc >/dev/null 2>&1 || need+=(runc)
    # The test's local OCI image needs the static build (Debian's 'busybox' is dynamic).
    dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
    command -v iptables >/dev/null 2>&1 || need+=(iptables)  # portmap
    # bgp-speaker/tests/peers: real BGP daemons (BIRD 2, GoBGP, FRR) peered inside namespaces.
    command -v bird >/dev/null 2>&1 || need+=(bird2)
    command -v gobgpd >/dev/null 2>&1 || need+=(gobgpd)
    [ -x /usr/lib/frr/bgpd ] || need+=(frr)
    # vpc/tests/datapath_netns.rs listens with a python3 one-liner (no nc here).
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    # vpc/tests and the lab's VPC backend: moto, the EC2 emulator, goes into a venv (below).
    if ! command -v moto_server >/dev/null 2>&1 && [ ! -x "$TRELLIS_MOTO_VENV/bin/moto_server" ]; then
        python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    fi
    [ "${#need[@]}" -eq 0 ] || printf '%s\n' "${need[@]}"
}

# Where moto (PyPI `moto[server]`) is installed when the machine has no `moto_server`.
TRELLIS_MOTO_VENV=${TRELLIS_MOTO_VENV:-/opt/trellis/moto-venv}

# moto in its own venv (Debian's python refuses system-wide pip installs), on PATH afterwards.
trellis_moto() {
    if ! command -v moto_server >/dev/null 2>&1; then
        if [ ! -x "$TRELLIS_MOTO_VENV/bin/moto_server" ]; then
            trellis_log "installing moto[server] 5.x into $TRELLIS_MOTO_VENV"
            python3 -m venv "$TRELLIS_MOTO_VENV" || trellis_die "python3 -m venv $TRELLIS_MOTO_VENV failed"
            "$TRELLIS_MOTO_VENV/bin/pip" install -q 'moto[server]>=5,<6' || trellis_die "pip install 'moto[server]>=5,<6' failed"
        fi
        export PATH="$TRELLIS_MOTO_VENV/bin:$PATH"
    fi
}

trellis_setup() {
    [ "$(id -u)" = 0 ] || trellis_die "run as root (it installs Debian packages and, later, creates network namespaces)"
    local need
    mapfile -t need < <(trellis_apt_needs)
    if [ "${#need[@]}" -gt 0 ]; then
        trellis_log "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || trellis_die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || trellis_die "apt-get install ${need[*]} failed"
    fi
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || trellis_die "cargo not found: install a Rust toolchain (rustup, Rust >= 1.94: aws-sdk-ec2 needs it)"
    trellis_moto
    # etcd 3.4 on arm64 refuses to start without this; harmless elsewhere.
    if [ "$(dpkg --print-architecture 2>/dev/null)" = arm64 ]; then
        export ETCD_UNSUPPORTED_ARCH=arm64
    fi
}
