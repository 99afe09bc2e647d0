# Shared settings for localstack/up and localstack/down (sourced, not executed).
# shellcheck shell=bash

LS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="$LS_DIR/.venv"
LS_STATE="$LS_DIR/.state"
LS_PIDFILE="$LS_STATE/localstack.pid"
LS_LOG="$LS_STATE/localstack.log"
LS_VOLUME="$LS_STATE/volume"
LS_LISTEN_FILE="$LS_STATE/listen"     # the GATEWAY_LISTEN the running process was started with
LS_LOCK="$LS_STATE/lock"
LS_PORT="${CLUSTERCTL_LOCALSTACK_PORT:-4566}"
LS_ENDPOINT="http://127.0.0.1:$LS_PORT"

ls_log() { printf 'localstack: %s\n' "$*" >&2; }
ls_die() { ls_log "error: $*"; exit 1; }

# The one place that decides where LocalStack listens (GATEWAY_LISTEN, comma separated).
# Always loopback. Extra host addresses (never a wildcard) can be added:
#   CLUSTERCTL_LOCALSTACK_EXTRA_LISTEN=ADDR[,ADDR...]   e.g. 172.17.0.1
#   CLUSTERCTL_LOCALSTACK_DOCKER_BRIDGE=1               adds docker0's IPv4 address if that bridge exists
# A realizer that needs LocalStack reachable from containers adds its address here.
ls_listen_list() {
    local list="127.0.0.1:$LS_PORT" addr extra
    extra="${CLUSTERCTL_LOCALSTACK_EXTRA_LISTEN:-}"
    if [[ "${CLUSTERCTL_LOCALSTACK_DOCKER_BRIDGE:-0}" == 1 ]]; then
        addr="$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
        [[ -n "$addr" ]] && extra="${extra:+$extra,}$addr"
    fi
    local IFS=,
    for addr in $extra; do
        addr="${addr// /}"
        [[ -z "$addr" ]] && continue
        case "$addr" in
            0.0.0.0|::|'[::]'|'*') ls_die "refusing to listen on the wildcard address '$addr'" ;;
        esac
        [[ ",$list," == *",$addr:$LS_PORT,"* ]] || list="$list,$addr:$LS_PORT"
    done
    printf '%s\n' "$list"
}

# Prints the pid from the pid file if that process is alive and is our LocalStack; else fails.
ls_running_pid() {
    local pid
    [[ -f "$LS_PIDFILE" ]] || return 1
    pid="$(cat "$LS_PIDFILE" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'localstack\.runtime\.main' || return 1
    # a zombie is not running
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    printf '%s\n' "$pid"
}

# Serialises up/down (concurrent callers wait).
ls_lock() {
    mkdir -p "$LS_STATE"
    exec 9>"$LS_LOCK"
    flock -w 300 9 || ls_die "could not get the lock $LS_LOCK within 300 s"
}

# Stops the process (and its process group, which setsid made ours) with SIGTERM,
# then SIGKILL after CLUSTERCTL_LOCALSTACK_STOP_TIMEOUT seconds (default 20).
ls_stop_pid() {
    local pid="$1" deadline=$((SECONDS + ${CLUSTERCTL_LOCALSTACK_STOP_TIMEOUT:-20})) target
    target="$pid"
    # kill the whole group only if the process leads its own group (started through setsid)
    if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then target="-$pid"; fi
    kill -TERM -- "$target" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do
        if ((SECONDS >= deadline)); then
            ls_log "pid $pid still alive after SIGTERM; sending SIGKILL"
            kill -KILL -- "$target" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    # the group may have stragglers after the leader exited
    if [[ "$target" == -* ]]; then kill -KILL -- "$target" 2>/dev/null || true; fi
}
