#!/bin/sh
# clusterctl's node install script, rendered from templates/install.sh by `clusterctl create`.
#
# usage: install.sh <master|worker> <binary-sha256> [<staged-binary>]
#
# Idempotent. Run as root, after the caller has put the node config and the systemd unit in place:
#   1. installs the clusterctl binary from <staged-binary> (default {{staged_binary}}; unpacked
#      if its name ends in .gz, else moved into place) unless the installed binary already has
#      <binary-sha256>, the SHA-256 of the uncompressed binary; the staged file is removed once
#      installed;
#   1b. on an HA master (a [master.etcd] section in the config): etcd's package, certificates,
#      settings and the clusterctl-etcd unit, (re)started without waiting when they changed;
#   2. reloads systemd if the unit file changed, enables the unit;
#   3. restarts the unit if the binary, the config or the unit changed since this script last
#      (re)started it, else starts it if it is not running.
# Prints exactly one line on stdout, "changed" or "unchanged"; on failure exits non-zero with a
# message on stderr.
set -eu

binary_path={{binary_path}}
config_path={{config_path}}
unit_dir={{unit_dir}}
state_dir={{state_dir}}
default_staged={{staged_binary}}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

usage="usage: install.sh <master|worker> <binary-sha256> [<staged-binary>]"
[ $# -ge 2 ] && [ $# -le 3 ] || fail "$usage"
role=$1
want=$2
staged=${3:-$default_staged}
case $role in
    master | worker) ;;
    *) fail "unknown role '$role' (expected master or worker); $usage" ;;
esac
case $want in
    *[!0-9a-f]*) fail "'$want' is not a SHA-256 in lowercase hex" ;;
esac
[ ${#want} -eq 64 ] || fail "'$want' is not a SHA-256 in lowercase hex"

unit=clusterctl-$role.service
unit_path=$unit_dir/$unit
stamp=$state_dir/install.stamp
changed=no

# The SHA-256 of a file, or nothing if it does not exist. OpenSSL's when the node has it (it uses
# the CPU's SHA instructions: several times faster than coreutils on the binary), else coreutils'.
sha256() {
    if [ -f "$1" ]; then
        if command -v openssl >/dev/null 2>&1; then
            openssl dgst -sha256 -r "$1" | cut -d' ' -f1
        else
            sha256sum "$1" | cut -d' ' -f1
        fi
    fi
}

[ -f "$config_path" ] || fail "the node config $config_path is missing"
[ -f "$unit_path" ] || fail "the unit $unit_path is missing"

umask 077
mkdir -p "$state_dir" || fail "creating $state_dir"
chmod 700 "$state_dir" "$(dirname "$config_path")" || fail "restricting $state_dir"
chmod 600 "$config_path" || fail "restricting $config_path"

# One install at a time on a node: `create` and a master's machine controller may both be
# bootstrapping the same new machine. (flock is util-linux's, on every Debian.)
if command -v flock >/dev/null 2>&1; then
    exec 9>"$state_dir/install.lock"
    flock -w 600 9 || fail "waiting for another install on this node"
fi

# 1. The binary, replaced atomically (a running process keeps its old file).
if [ "$(sha256 "$binary_path")" != "$want" ]; then
    [ -f "$staged" ] || fail "the installed binary $binary_path is not $want and the staged binary $staged is missing"
    mkdir -p "$(dirname "$binary_path")" || fail "creating the folder of $binary_path"
    tmp=$binary_path.new
    trap 'rm -f "$tmp"' EXIT
    case $staged in
        *.gz) gzip -dc "$staged" >"$tmp" || fail "decompressing $staged" ;;
        *) mv -f "$staged" "$tmp" || fail "moving $staged" ;;
    esac
    got=$(sha256 "$tmp")
    [ "$got" = "$want" ] || fail "the staged binary $staged has SHA-256 $got, expected $want"
    chmod 755 "$tmp"
    mv -f "$tmp" "$binary_path" || fail "moving the new binary to $binary_path"
    trap - EXIT
    rm -f "$staged"
    changed=yes
fi

# 1b. An HA master's etcd member (its config has [master.etcd]): Debian's etcd-server package (the
# node image carries it, as a golden AMI would; installed here where it is missing), its
# certificates and settings (`clusterctl node etcd-setup`), and the clusterctl-etcd unit, (re)started
# without waiting: a member waits for its peers, and the cluster forms once a majority runs.
etcd_unit=clusterctl-etcd.service
if [ "$role" = master ] && grep -q '^\[master\.etcd\]' "$config_path"; then
    if [ ! -x /usr/bin/etcd ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >&2 || fail "installing Debian's etcd-server"
    fi
    # `ss`: a master replacing a dead one has the survivors close their connections to it.
    if ! command -v ss >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >&2 || fail "installing iproute2"
    fi
    # Debian's own unit would run a second, unconfigured etcd.
    systemctl mask --now etcd.service >/dev/null 2>&1 || true
    [ -f "$unit_dir/$etcd_unit" ] || fail "the unit $unit_dir/$etcd_unit is missing"
    etcd_env=$(dirname "$config_path")/etcd.env
    "$binary_path" node etcd-setup --config "$config_path" --env-file "$etcd_env" >&2 || fail "making etcd's certificates and settings"
    etcd_current="etcd $(sha256 "$etcd_env") $(sha256 "$unit_dir/$etcd_unit")"
    etcd_stamp=$state_dir/etcd.stamp
    if [ "$(cat "$etcd_stamp" 2>/dev/null || true)" != "$etcd_current" ]; then
        systemctl enable --no-reload --quiet "$etcd_unit" >&2 || fail "enabling $etcd_unit"
        systemctl daemon-reload >&2 || fail "reloading systemd after $etcd_unit changed"
        systemctl restart --no-block "$etcd_unit" >&2 || fail "restarting $etcd_unit"
        printf '%s\n' "$etcd_current" >"$etcd_stamp"
        changed=yes
    elif ! systemctl is-active --quiet "$etcd_unit"; then
        systemctl start --no-block "$etcd_unit" >&2 || fail "starting $etcd_unit"
    fi
fi

# What the unit runs with now; the stamp holds what it was last (re)started with.
unit_line="unit $unit $(sha256 "$unit_path")"
current="binary $want
config $(sha256 "$config_path")
$unit_line"
previous=$(cat "$stamp" 2>/dev/null || true)

# 2. systemd's view of the unit: one reload for a new or changed unit file and its enabling
# (`enable` alone reloads too, and a reload costs systemd about 50 ms of CPU on a small node).
reload=no
if ! printf '%s\n' "$previous" | grep -qxF "$unit_line"; then
    reload=yes
fi
if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    systemctl enable --no-reload --quiet "$unit" >&2 || fail "enabling $unit"
    reload=yes
fi
if [ "$reload" = yes ]; then
    systemctl daemon-reload >&2 || fail "reloading systemd after $unit changed"
    changed=yes
fi

# 3. The service itself. The stamp is written only after a successful (re)start, so a failed
# restart is retried by the next run.
if [ "$previous" != "$current" ]; then
    systemctl restart "$unit" >&2 || fail "restarting $unit"
    changed=yes
elif ! systemctl is-active --quiet "$unit"; then
    systemctl reset-failed "$unit" >/dev/null 2>&1 || true
    systemctl start "$unit" >&2 || fail "starting $unit"
    changed=yes
fi
if [ "$previous" != "$current" ]; then
    printf '%s\n' "$current" >"$stamp.tmp"
    mv -f "$stamp.tmp" "$stamp" || fail "writing $stamp"
fi

if [ "$changed" = yes ]; then
    echo changed
else
    echo unchanged
fi
