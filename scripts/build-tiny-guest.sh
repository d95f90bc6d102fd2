#!/bin/bash
# Build the "tiny guest" used by qga-libvirt's VM tests: the host's Debian kernel,
# an initramfs (busybox-static + the host's /usr/sbin/qemu-ga and its shared libs +
# virtio/ext4 modules) and a small ext4 data-disk template.
#
# Usage: build-tiny-guest.sh [CACHE_DIR [QEMU_GA]]
#   CACHE_DIR defaults to $QGA_GUEST_CACHE, then /var/cache/qga-libvirt/guest.
#   QEMU_GA is the qemu-ga binary to put in the guest (default /usr/sbin/qemu-ga; e.g.
#   the bookworm-backports build scripts/setup.sh unpacks); give each its own CACHE_DIR.
#   QGA_GUEST_KVER=VERSION picks the kernel (default: newest /boot/vmlinuz-* that
#   has /lib/modules/VERSION).
# Produces CACHE_DIR/{vmlinuz,initrd.img,data.img,stamp}; prints CACHE_DIR.
# Cached: rebuilds only when the stamp (kernel version + hashes of the kernel,
# qemu-ga, busybox and this script) changed. Safe to run concurrently (flock).
#
# Guest kernel command line switches (read by the guest's /etc/init.d/rcS):
#   qga.hostname=NAME   hostname (default tiny-qga)
#   qga.agent=off       do not start qemu-ga (the "agent never starts" case)
#   qga.verbose=1       run qemu-ga with -v
# The guest logs to /dev/console (use console=ttyS0).
set -euo pipefail

CACHE=${1:-${QGA_GUEST_CACHE:-/var/cache/qga-libvirt/guest}}
QGA_BIN=${2:-/usr/sbin/qemu-ga}
BUSYBOX=/bin/busybox
DATA_MIB=16
SELF=$(readlink -f "${BASH_SOURCE[0]}")

die() { echo "build-tiny-guest: ERROR: $*" >&2; exit 1; }

[ -x "$QGA_BIN" ] || die "$QGA_BIN missing (apt-get install qemu-guest-agent)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (apt-get install busybox-static)"
for b in cpio gzip mkfs.ext4 ldd sha256sum flock; do
    command -v "$b" >/dev/null || die "$b not found"
done

# ---- pick the kernel -------------------------------------------------------
if [ -n "${QGA_GUEST_KVER:-}" ]; then
    KVER=$QGA_GUEST_KVER
else
    KVER=""
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V); do
        [ -d "/lib/modules/$k/kernel" ] && KVER=$k
    done
fi
[ -n "$KVER" ] || die "no /boot/vmlinuz-VERSION with /lib/modules/VERSION (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] || die "$KERNEL not readable"
[ -d "$MODDIR" ] || die "$MODDIR missing"

# Load order matters: insmod does not resolve dependencies.
MODULES=(
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console
    virtio_blk crc16 mbcache crc32c_generic jbd2 ext4
    failover net_failover virtio_net
)
# Missing ones are skipped in the guest (some may be built in).
OPTIONAL_MODULES=" crc32c_generic failover net_failover virtio_net "

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

STAMP_NEW=$(
    echo "kver=$KVER"
    sha256sum "$KERNEL" "$QGA_BIN" "$BUSYBOX" "$SELF" | awk '{print $1}'
)
if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP_NEW" ] \
    && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ] && [ -s "$CACHE/data.img" ]; then
    echo "$CACHE"
    exit 0
fi
echo "build-tiny-guest: building into $CACHE (kernel $KVER)" >&2

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,lib/modules,lib64,proc,sys,dev,tmp,run,mnt/data,root,home/tester,var/lib,var/log,usr/share/udhcpc}
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"
chmod 700 "$R/root"

# ---- busybox and all its applets ------------------------------------------
cp "$BUSYBOX" "$R/bin/busybox"
"$BUSYBOX" --list-full | while read -r app; do
    [ -e "$R/$app" ] || ln -s /bin/busybox "$R/$app"
done
ln -s /bin/busybox "$R/init"

# ---- qemu-ga and its shared libraries --------------------------------------
cp "$QGA_BIN" "$R/usr/sbin/qemu-ga"
ln -s /usr/sbin/qemu-ga "$R/usr/bin/qemu-ga"
ldd "$QGA_BIN" | awk '/=> \//{print $3} /^\t\//{print $1}' | sort -u | while read -r lib; do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done
[ -e "$R/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied"

# ---- kernel modules (uncompressed: busybox insmod may not handle .xz/.zst) --
: >"$R/etc/modules.order"
for m in "${MODULES[@]}"; do
    f=$(find "$MODDIR/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)
    if [ -z "$f" ]; then
        if grep -q "/$m.ko" "$MODDIR/modules.builtin" 2>/dev/null; then continue; fi
        case "$OPTIONAL_MODULES" in *" $m "*) continue ;; esac
        die "module $m not found under $MODDIR"
    fi
    case "$f" in
        *.ko) cp "$f" "$R/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$R/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$R/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$R/etc/modules.order"
done

# ---- /etc -------------------------------------------------------------------
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
tester:x:1000:1000:Tiny Tester:/home/tester:/bin/sh
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
users:x:100:tester
nogroup:x:65534:
tester:x:1000:
EOF
cat >"$R/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
tester:*:19000:0:99999:7:::
EOF
chmod 600 "$R/etc/shadow"
chown 1000:1000 "$R/home/tester"
cat >"$R/etc/os-release" <<'EOF'
PRETTY_NAME="Tiny QGA guest 1.0"
NAME="Tiny QGA guest"
VERSION_ID="1.0"
VERSION="1.0 (tiny)"
ID=tinyqga
ID_LIKE=debian
VARIANT="Test"
VARIANT_ID=test
HOME_URL="https://example.invalid/tiny-qga"
EOF
cat >"$R/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
EOF
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$R/etc/hosts"
echo tiny-qga >"$R/etc/hostname"
ln -s /proc/mounts "$R/etc/mtab"
echo "$KVER" >"$R/etc/tiny-kernel-version"

cat >"$R/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:/etc/init.d/qga-agent
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
::restart:/sbin/init
EOF

cat >"$R/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# Tiny QGA guest: system init (run once by busybox init).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
dmesg -n 1
for m in $(cat /etc/modules.order); do
    insmod /lib/modules/$m.ko || echo "tiny-guest: insmod $m failed"
done
hn=tiny-qga
for w in $(cat /proc/cmdline); do
    case "$w" in
        qga.hostname=*) hn=${w#qga.hostname=} ;;
        qga.agent=off) touch /run/qga-agent-off ;;
        qga.verbose=1) touch /run/qga-verbose ;;
    esac
done
hostname "$hn"
echo "$hn" >/etc/hostname
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -b -q -S -i eth0 -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &
fi
i=0
while [ ! -b /dev/vda ] && [ -e /sys/block/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ] && [ "$(cat /sys/block/vda/serial 2>/dev/null)" != qga-python ]; then
    mount -t ext4 /dev/vda /mnt/data || echo "tiny-guest: mounting /dev/vda failed"
fi
# The read-only Python disk (scripts/build-python-disk.sh), recognised by its serial.
for s in /sys/block/vd*/serial; do
    [ "$(cat "$s" 2>/dev/null)" = qga-python ] || continue
    d=${s%/serial}
    mkdir -p /opt/python
    mount -t ext4 -o ro "/dev/${d##*/}" /opt/python && /opt/python/setup.sh \
        || echo "tiny-guest: mounting the Python disk failed"
done
echo "tiny-guest: up ($hn, $(cat /proc/uptime | cut -d' ' -f1)s)"
EOF

cat >"$R/etc/init.d/qga-agent" <<'EOF'
#!/bin/sh
# Tiny QGA guest: run qemu-ga on the org.qemu.guest_agent.0 virtio port
# (respawned by busybox init).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
if [ -e /run/qga-agent-off ]; then
    exec sleep 2147483647
fi
port=""
i=0
while [ -z "$port" ]; do
    for n in /sys/class/virtio-ports/*/name; do
        [ -r "$n" ] || continue
        if [ "$(cat "$n")" = org.qemu.guest_agent.0 ]; then
            port=$(basename "$(dirname "$n")")
        fi
    done
    [ -n "$port" ] && break
    i=$((i + 1))
    if [ $i -eq 300 ]; then
        echo "tiny-guest: no org.qemu.guest_agent.0 virtio port; qemu-ga not started"
    fi
    [ $i -ge 300 ] && exec sleep 2147483647
    sleep 0.1
done
if [ ! -c "/dev/$port" ]; then
    mknod "/dev/$port" c $(tr ':' ' ' <"/sys/class/virtio-ports/$port/dev")
fi
mkdir -p /run/qga
v=""
[ -e /run/qga-verbose ] && v=-v
echo "tiny-guest: starting qemu-ga on /dev/$port ($(cut -d" " -f1 /proc/uptime)s)"
qemu-ga -m virtio-serial -p "/dev/$port" -t /run/qga -f /run/qemu-ga.pid $v
echo "tiny-guest: qemu-ga exited ($?)"
sleep 1
EOF

cat >"$R/etc/init.d/rcK" <<'EOF'
#!/bin/sh
# Tiny QGA guest: shutdown actions.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
sync
umount /mnt/data 2>/dev/null
sync
EOF

# qemu-ga's guest-shutdown runs: /sbin/shutdown -h -P|-H|-r +0 "message"
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/sh
# Minimal shutdown(8) for qemu-ga: -P poweroff (default), -H halt, -r reboot.
action=poweroff
for a in "$@"; do
    case "$a" in
        -r) action=reboot ;;
        -H) action=halt ;;
        -P) action=poweroff ;;
    esac
done
echo "tiny-guest: shutdown -> $action" >/dev/console
exec /bin/busybox "$action"
EOF

# qemu-ga's guest-set-user-password pipes "user:password" into chpasswd [-e];
# busybox-static has no chpasswd applet.
rm -f "$R/usr/sbin/chpasswd"
cat >"$R/usr/sbin/chpasswd" <<'EOF'
#!/bin/sh
# Minimal chpasswd(8): "user:password" lines on stdin; -e = already crypted.
enc=0
[ "$1" = "-e" ] && enc=1
rc=0
while IFS= read -r line; do
    user=${line%%:*}
    pw=${line#*:}
    if ! grep -q "^$user:" /etc/shadow; then
        echo "chpasswd: unknown user $user" >&2
        rc=1
        continue
    fi
    if [ $enc = 0 ]; then
        pw=$(mkpasswd -m sha512 "$pw") || { rc=1; continue; }
    fi
    awk -F: -v OFS=: -v u="$user" -v p="$pw" '$1 == u { $2 = p } 1' /etc/shadow >/etc/shadow.new \
        && cat /etc/shadow.new >/etc/shadow && rm -f /etc/shadow.new || rc=1
done
exit $rc
EOF

cat >"$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        [ -n "$dns" ] && for d in $dns; do echo "nameserver $d"; done >/etc/resolv.conf
        ;;
esac
exit 0
EOF
chmod 755 "$R"/etc/init.d/* "$R/sbin/shutdown" "$R/usr/sbin/chpasswd" "$R/usr/share/udhcpc/default.script"

# /dev/console must exist in the initramfs for init's stdio.
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$R/dev/null" c 1 3 2>/dev/null || true

(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) \
    | gzip -6 >"$WORK/initrd.img"

# ---- data disk template ------------------------------------------------------
mkdir -p "$WORK/data/hello"
echo "hello from the tiny guest data disk" >"$WORK/data/hello/hello.txt"
truncate -s "${DATA_MIB}M" "$WORK/data.img"
mkfs.ext4 -F -q -L qgadata -d "$WORK/data" "$WORK/data.img"

cp "$KERNEL" "$WORK/vmlinuz"
chmod 644 "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/data.img"
mv -f "$WORK/vmlinuz" "$CACHE/vmlinuz"
mv -f "$WORK/initrd.img" "$CACHE/initrd.img"
mv -f "$WORK/data.img" "$CACHE/data.img"
echo "$STAMP_NEW" >"$CACHE/stamp"
echo "$CACHE"
