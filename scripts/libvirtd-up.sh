#!/bin/bash
# Start virtlogd and libvirtd (no systemd) so that both
#   qemu:///system              (unix socket) and
#   qemu+tcp://127.0.0.1/system (TCP, 127.0.0.1 only, no auth: tests only)
# answer. Idempotent and fast when everything is already up.
#
# libvirtd reads its own config file (written by this script), not
# /etc/libvirt/libvirtd.conf, which is left untouched:
#   listen_tcp = 1, listen_tls = 0, listen_addr = "127.0.0.1", auth_tcp = "none"
# and is started with `-d -l` (`--listen`). libvirt >= 5.6 refuses --listen only
# when systemd socket activation passes it sockets; without systemd (this machine)
# --listen is what turns listen_tcp on. listen_tls must be 0, otherwise --listen
# also wants TLS certificates and libvirtd exits.
#
# If libvirtd already runs without TCP, it is restarted only when no domain is
# running; otherwise a warning is printed and the script fails (exit 2).
#
# Env: QGA_LIBVIRTD_WAIT  seconds to wait for the daemons (default 30).
# Exit: 0 ok, 1 a daemon failed to come up, 2 TCP not available (domains running).
set -euo pipefail

WAIT=${QGA_LIBVIRTD_WAIT:-30}
CONF_DIR=/var/lib/qga-libvirt
CONF=$CONF_DIR/libvirtd.conf
LIBVIRTD_PID=/run/libvirtd.pid
VIRTLOGD_PID=/run/virtlogd.pid
LOCAL_URI=qemu:///system
TCP_URI=qemu+tcp://127.0.0.1/system

log() { echo "libvirtd-up: $*" >&2; }
die() { log "ERROR: $*"; exit "${2:-1}"; }

[ "$(id -u)" = 0 ] || die "must run as root"
for b in libvirtd virtlogd virsh; do
    command -v "$b" >/dev/null || die "$b not found (apt-get install libvirt-daemon-system libvirt-clients)"
done

# pid of a running daemon: from its pid file if alive, else by exact process name.
daemon_pid() { # NAME PIDFILE
    local pid
    if [ -s "$2" ]; then
        pid=$(cat "$2" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
            echo "$pid"
            return 0
        fi
    fi
    pgrep -x "$1" | head -n1 || true
}

virsh_ok() { # URI
    timeout 10 virsh -q -c "$1" list >/dev/null 2>&1
}

wait_for() { # URI
    local deadline=$((SECONDS + WAIT))
    until virsh_ok "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

write_conf() {
    mkdir -p "$CONF_DIR"
    local tmp
    tmp=$(mktemp "$CONF.XXXXXX")
    cat >"$tmp" <<'EOF'
# Written by qga-libvirt scripts/libvirtd-up.sh: libvirtd -d -l -f THIS_FILE
# TCP without auth on loopback only, for tests. Do not use on a shared network.
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
auth_tcp = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    if cmp -s "$tmp" "$CONF"; then rm -f "$tmp"; else mv "$tmp" "$CONF"; fi
}

start_virtlogd() {
    [ -n "$(daemon_pid virtlogd "$VIRTLOGD_PID")" ] && return 0
    log "starting virtlogd"
    virtlogd -d
    local deadline=$((SECONDS + WAIT))
    until [ -S /run/libvirt/virtlogd-sock ]; do
        [ $SECONDS -lt $deadline ] || die "virtlogd did not create /run/libvirt/virtlogd-sock"
        sleep 0.1
    done
}

start_libvirtd() {
    log "starting libvirtd -d -l -f $CONF"
    mkdir -p /var/log/libvirt
    libvirtd -d -l -f "$CONF" || die "libvirtd -d -l failed (see /var/log/libvirt/libvirtd.log)"
    wait_for "$LOCAL_URI" || die "libvirtd started but $LOCAL_URI does not answer after ${WAIT}s"
    wait_for "$TCP_URI" || die "libvirtd started but $TCP_URI does not answer after ${WAIT}s"
}

stop_libvirtd() { # PID
    log "restarting libvirtd (pid $1) to enable TCP listening"
    kill -TERM "$1"
    local deadline=$((SECONDS + WAIT))
    while kill -0 "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "libvirtd (pid $1) did not exit after SIGTERM"
        sleep 0.1
    done
}

# Fast path: everything already answers.
if [ -n "$(daemon_pid virtlogd "$VIRTLOGD_PID")" ] && virsh_ok "$LOCAL_URI" && virsh_ok "$TCP_URI"; then
    exit 0
fi

write_conf
start_virtlogd

pid=$(daemon_pid libvirtd "$LIBVIRTD_PID")
if [ -z "$pid" ]; then
    start_libvirtd
    log "ready: $LOCAL_URI and $TCP_URI"
    exit 0
fi

# libvirtd runs: maybe still starting up.
wait_for "$LOCAL_URI" || die "libvirtd (pid $pid) runs but $LOCAL_URI does not answer after ${WAIT}s"
virsh_ok "$TCP_URI" && exit 0

running=$(timeout 10 virsh -q -c "$LOCAL_URI" list --name 2>/dev/null | sed '/^$/d' || true)
if [ -n "$running" ]; then
    log "WARNING: libvirtd (pid $pid) does not listen on TCP and domains are running:"
    log "  $(echo "$running" | tr '\n' ' ')"
    log "  not restarting it; $TCP_URI is unavailable (only $LOCAL_URI works)"
    exit 2
fi
stop_libvirtd "$pid"
start_libvirtd
log "ready: $LOCAL_URI and $TCP_URI"
