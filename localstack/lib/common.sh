# Shared settings for localstack/up and localstack/down (sourced, not executed).
# shellcheck shell=bash

LS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_REPO="$(cd "$LS_DIR/.." && pwd)"
LS_VENV="$LS_DIR/.venv"
# CLUSTERCTL_LOCALSTACK_STATE_DIR: a second, independent harness (own port, own state, own Docker
# objects) can run beside the default one, e.g. for tests of up/down themselves.
LS_STATE="${CLUSTERCTL_LOCALSTACK_STATE_DIR:-$LS_DIR/.state}"
mkdir -p "$LS_STATE"
LS_STATE="$(cd "$LS_STATE" && pwd)"
LS_PIDFILE="$LS_STATE/localstack.pid"
LS_LOG="$LS_STATE/localstack.log"
LS_VOLUME="$LS_STATE/volume"
LS_LISTEN_FILE="$LS_STATE/listen"     # the GATEWAY_LISTEN the running process was started with
LS_CONFIG_FILE="$LS_STATE/config"     # fingerprint of everything else it was started with
LS_NODES="$LS_STATE/nodes"            # instance metadata of the realizer's nodes
# Value of the clusterctl.localstack label on every Docker object this harness's realizer makes.
LS_OWNER="$LS_STATE"
LS_LOCK="$LS_STATE/lock"
LS_PORT="${CLUSTERCTL_LOCALSTACK_PORT:-4566}"
LS_ENDPOINT="http://127.0.0.1:$LS_PORT"

ls_log() { printf 'localstack: %s\n' "$*" >&2; }
ls_die() { ls_log "error: $*"; exit 1; }

# 1 when the EC2/NLB realizer is on (the default): instances become node containers.
ls_realizer_on() { [[ "${CLUSTERCTL_LOCALSTACK_REALIZER:-1}" == 1 ]]; }

# docker0's IPv4 address (172.17.0.1 normally), empty without that bridge.
ls_docker_bridge_addr() {
    ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'
}

# The one place that decides where LocalStack listens (GATEWAY_LISTEN, comma separated).
# Always loopback. Extra host addresses (never a wildcard) can be added:
#   CLUSTERCTL_LOCALSTACK_EXTRA_LISTEN=ADDR[,ADDR...]   e.g. 172.17.0.1
#   CLUSTERCTL_LOCALSTACK_DOCKER_BRIDGE=1               adds docker0's IPv4 address if that bridge exists
#                                                       (default: 1 with the realizer, else 0)
# With the realizer, docker0's address is how nodes reach LocalStack: a node's packets to
# 172.17.0.1 go through its VPC network's gateway (this machine) and arrive locally.
ls_listen_list() {
    local list="127.0.0.1:$LS_PORT" addr extra bridge_default=0
    extra="${CLUSTERCTL_LOCALSTACK_EXTRA_LISTEN:-}"
    ls_realizer_on && bridge_default=1
    if [[ "${CLUSTERCTL_LOCALSTACK_DOCKER_BRIDGE:-$bridge_default}" == 1 ]]; then
        addr="$(ls_docker_bridge_addr)"
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

# Removes every Docker object (containers with their anonymous volumes, volumes, networks) that
# carries the label clusterctl.localstack=<this harness's state folder>; with "all" also those
# labelled clusterctl.harness=1 that belong to no harness (no clusterctl.localstack label, e.g.
# node-image/run-node's). Objects of another harness (other state folder) are left alone.
ls_docker_cleanup() {
    local scope="${1:-own}" ids n=0 id
    command -v docker >/dev/null 2>&1 || return 0
    timeout 10 docker info >/dev/null 2>&1 || { ls_log "docker does not answer: no Docker clean-up"; return 0; }
    ids="$(docker ps -aq --filter "label=clusterctl.localstack=$LS_OWNER")"
    if [[ "$scope" == all ]]; then
        for id in $(docker ps -aq --filter label=clusterctl.harness); do
            [[ -z "$(docker inspect -f '{{index .Config.Labels "clusterctl.localstack"}}' "$id" 2>/dev/null)" ]] && ids+=" $id"
        done
    fi
    if [[ -n "${ids// /}" ]]; then
        n=$(wc -w <<<"$ids")
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
    local nets="" vols=""
    nets="$(docker network ls -q --filter "label=clusterctl.localstack=$LS_OWNER")"
    vols="$(docker volume ls -q --filter "label=clusterctl.localstack=$LS_OWNER")"
    if [[ "$scope" == all ]]; then
        for id in $(docker network ls -q --filter label=clusterctl.harness); do
            [[ -z "$(docker network inspect -f '{{index .Labels "clusterctl.localstack"}}' "$id" 2>/dev/null)" ]] && nets+=" $id"
        done
        for id in $(docker volume ls -q --filter label=clusterctl.harness); do
            [[ -z "$(docker volume inspect -f '{{index .Labels "clusterctl.localstack"}}' "$id" 2>/dev/null)" ]] && vols+=" $id"
        done
    fi
    # shellcheck disable=SC2086
    [[ -n "${nets// /}" ]] && { docker network rm $nets >/dev/null 2>&1 || true; }
    # shellcheck disable=SC2086
    [[ -n "${vols// /}" ]] && { docker volume rm -f $vols >/dev/null 2>&1 || true; }
    rm -rf "$LS_NODES"
    local nn nv
    nn=$(wc -w <<<"$nets"); nv=$(wc -w <<<"$vols")
    if ((n + nn + nv > 0)); then
        ls_log "removed $n container(s), $nn network(s), $nv volume(s) of the realizer"
    fi
}

# Removes the VPC routers' policy routing of this harness's previous LocalStack (the rules and
# routing tables recorded in <state>/vpc-routers.json, see plugin/clusterctl_localstack/routes.py),
# and any rule of a VPC router whose bridge is gone (left by a crash).
ls_router_cleanup() {
    command -v ip >/dev/null 2>&1 || return 0
    [[ -x "$LS_VENV/bin/python" ]] || { ls_log "no venv: no clean-up of VPC routing rules"; return 0; }
    PYTHONPATH="$LS_DIR/plugin${PYTHONPATH:+:$PYTHONPATH}" "$LS_VENV/bin/python" \
        -m clusterctl_localstack.routes cleanup "$LS_STATE" >&2 || ls_log "warning: the VPC routing clean-up failed"
}
