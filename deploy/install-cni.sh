#!/bin/sh
# Installs the trellis CNI plugin and its network configuration into the host's CNI
# directories: what the trellis-node DaemonSet's init container runs (Calico's install-cni).
#
#   CNI_BIN_DIR        where the runtime looks for plugins      (default /host/opt/cni/bin)
#   CNI_NET_DIR        where the runtime reads conflists         (default /host/etc/cni/net.d)
#   TRELLIS_CNI_BIN    the plugin binary to install              (default /opt/trellis/bin/trellis)
#   CNI_CONF_NAME      the conflist's file name                  (default 10-trellis.conflist)
#   CNI_NETWORK_CONFIG the conflist's text (default: trellis chained with portmap), in which
#                      __AGENT_SOCKET__ and __CNI_MTU__ are replaced
#   TRELLIS_AGENT_SOCKET                                         (default /var/run/trellis/agent.sock)
#   CNI_MTU            0 leaves the MTU to the agent             (default 0)
#
# Every file lands by rename(2) from a temporary file in the same directory, so a runtime never
# reads a half-written plugin or conflist; a file whose content is already right is left alone
# (same inode, same mtime), so running it again changes nothing. Exit status non-zero, with
# the reason on stderr, when anything is missing; then nothing has been replaced.
set -eu

CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
TRELLIS_CNI_BIN=${TRELLIS_CNI_BIN:-/opt/trellis/bin/trellis}
CNI_CONF_NAME=${CNI_CONF_NAME:-10-trellis.conflist}
TRELLIS_AGENT_SOCKET=${TRELLIS_AGENT_SOCKET:-/var/run/trellis/agent.sock}
CNI_MTU=${CNI_MTU:-0}

die() {
    echo "install-cni: $*" >&2
    exit 1
}

DEFAULT_CONFIG='{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {
      "type": "trellis",
      "agent_socket": "__AGENT_SOCKET__",
      "mtu": __CNI_MTU__,
      "ipam": {"type": "trellis-ipam"}
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {"portMappings": true}
    }
  ]
}'
CNI_NETWORK_CONFIG=${CNI_NETWORK_CONFIG:-$DEFAULT_CONFIG}

[ -f "$TRELLIS_CNI_BIN" ] || die "the plugin $TRELLIS_CNI_BIN does not exist"
case "$CNI_MTU" in
    '' | *[!0-9]*) die "CNI_MTU must be a number of bytes, got '$CNI_MTU'" ;;
esac
case "$CNI_CONF_NAME" in
    */* | .* | '') die "CNI_CONF_NAME must be a plain file name, got '$CNI_CONF_NAME'" ;;
    *.conflist) ;;
    *) die "CNI_CONF_NAME must end in .conflist, got '$CNI_CONF_NAME'" ;;
esac
mkdir -p "$CNI_BIN_DIR" "$CNI_NET_DIR" || die "cannot create $CNI_BIN_DIR or $CNI_NET_DIR"

# Everything is staged first, so a failure leaves the installed files as they were.
staged=""
cleanup() {
    for f in $staged; do rm -f "$f"; done
}
trap cleanup EXIT

# stage SRC_FILE DIR NAME MODE: sets $staged_file to a temporary copy in DIR, or to nothing
# when DIR/NAME already has the same content and mode. (No subshell: the cleanup list must
# see every temporary file.)
stage() {
    staged_file=""
    if [ -f "$2/$3" ] && cmp -s "$1" "$2/$3" && [ "$(stat -c %a "$2/$3")" = "$4" ]; then
        return 0
    fi
    staged_file=$(mktemp "$2/.$3.XXXXXX") || die "cannot write in $2"
    staged="$staged $staged_file"
    cp "$1" "$staged_file" || die "cannot copy $1 to $2"
    chmod "$4" "$staged_file"
}

conf_src=$(mktemp) || die "cannot make a temporary file"
staged="$staged $conf_src"
printf '%s\n' "$CNI_NETWORK_CONFIG" |
    sed -e "s|__AGENT_SOCKET__|$TRELLIS_AGENT_SOCKET|g" -e "s|__CNI_MTU__|$CNI_MTU|g" >"$conf_src"
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$conf_src" 2>/dev/null ||
        die "CNI_NETWORK_CONFIG is not valid JSON once substituted"
fi

stage "$TRELLIS_CNI_BIN" "$CNI_BIN_DIR" trellis 755
bin_tmp=$staged_file
stage "$conf_src" "$CNI_NET_DIR" "$CNI_CONF_NAME" 644
conf_tmp=$staged_file

# The plugin first: a conflist naming a plugin that is not there yet would fail pods.
if [ -n "$bin_tmp" ]; then
    mv -f "$bin_tmp" "$CNI_BIN_DIR/trellis"
    echo "install-cni: installed $CNI_BIN_DIR/trellis"
fi
if [ -n "$conf_tmp" ]; then
    mv -f "$conf_tmp" "$CNI_NET_DIR/$CNI_CONF_NAME"
    echo "install-cni: installed $CNI_NET_DIR/$CNI_CONF_NAME"
fi
if [ -z "$bin_tmp$conf_tmp" ]; then
    echo "install-cni: $CNI_BIN_DIR/trellis and $CNI_NET_DIR/$CNI_CONF_NAME are up to date"
fi
