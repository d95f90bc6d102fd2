#!/bin/bash
# Build the read-only "Python disk" that turns a tiny guest into one that runs real
# Ansible modules: the host's Debian /usr/bin/python3.11, its standard library and the
# shared libraries they need, on an ext4 image that every guest attaches read-only.
#
# Usage: build-python-disk.sh [CACHE_DIR]
#   CACHE_DIR defaults to $QGA_PYTHON_CACHE, then /var/cache/qga-libvirt/python.
# Produces CACHE_DIR/{python.img,stamp}; prints the path of python.img.
# Cached: rebuilds only when the stamp (the Python packages' versions and hashes of the
# interpreter and this script) changed. Safe to run concurrently (flock).
#
# In the guest (scripts/build-tiny-guest.sh's init): the virtio disk whose serial is
# "qga-python" is mounted read-only at /opt/python and its /opt/python/setup.sh links
# /usr/bin/python3 and the libraries into place. The image's root is a Python prefix:
# bin/python3.11, lib/python3.11 (sys.prefix finds it from the executable), and
# lib/x86_64-linux-gnu (libraries not already in the initramfs).
set -euo pipefail

CACHE=${1:-${QGA_PYTHON_CACHE:-/var/cache/qga-libvirt/python}}
PY=/usr/bin/python3.11
STDLIB=/usr/lib/python3.11
SELF=$(readlink -f "${BASH_SOURCE[0]}")
# Not needed to run modules, and a third of the size.
EXCLUDE=(test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data config-3.11-x86_64-linux-gnu)

die() { echo "build-python-disk: ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "$PY missing (apt-get install python3.11)"
[ -f "$STDLIB/os.py" ] || die "$STDLIB missing (apt-get install libpython3.11-stdlib)"
for b in mkfs.ext4 ldd sha256sum flock du; do
    command -v "$b" >/dev/null || die "$b not found"
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

STAMP_NEW=$(
    dpkg-query -W python3.11-minimal libpython3.11-stdlib 2>/dev/null || true
    sha256sum "$PY" "$SELF" | awk '{print $1}'
)
if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP_NEW" ] && [ -s "$CACHE/python.img" ]; then
    echo "$CACHE/python.img"
    exit 0
fi
echo "build-python-disk: building $CACHE/python.img" >&2

WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R/bin" "$R/lib/x86_64-linux-gnu"

cp "$PY" "$R/bin/python3.11"
excludes=()
for e in "${EXCLUDE[@]}"; do excludes+=(--exclude="./$e"); done
(cd "$STDLIB" && tar -cf - "${excludes[@]}" --exclude=EXTERNALLY-MANAGED .) \
    | (mkdir -p "$R/lib/python3.11" && cd "$R/lib/python3.11" && tar -xf -)
# Compiled once here: compiling at each import under TCG costs seconds, and the disk is
# read-only in the guest.
"$PY" -m compileall -q -j0 "$R/lib/python3.11" >/dev/null 2>&1 || true

# Every library the interpreter and its extension modules load. The guest's initramfs
# has a few (libc, libm...); setup.sh links only the ones it lacks.
{
    ldd "$PY"
    for so in "$R"/lib/python3.11/lib-dynload/*.so; do ldd "$so"; done
} | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
    cp -L "$lib" "$R/lib/x86_64-linux-gnu/"
done

cat >"$R/setup.sh" <<'EOF'
#!/bin/sh
# Run by the tiny guest's init once this disk is mounted read-only at /opt/python:
# puts python3 on the PATH and the libraries it needs where the dynamic loader looks.
P=/opt/python
mkdir -p /lib/x86_64-linux-gnu
for f in "$P"/lib/x86_64-linux-gnu/*; do
    b=${f##*/}
    [ -e "/lib/x86_64-linux-gnu/$b" ] || ln -s "$f" "/lib/x86_64-linux-gnu/$b"
done
ln -sf "$P/bin/python3.11" /usr/bin/python3.11
ln -sf python3.11 /usr/bin/python3
# Ansible puts modules for an unprivileged become user under /var/tmp: it must exist
# world-writable and sticky, as on any distribution.
mkdir -p /var/tmp
chmod 1777 /var/tmp
EOF
chmod 755 "$R/setup.sh"

size_kib=$(du -sk "$R" | cut -f1)
img_mib=$(((size_kib * 5 / 4) / 1024 + 16))
truncate -s "${img_mib}M" "$WORK/python.img"
# No journal: the guests mount it read-only, all at once.
mkfs.ext4 -F -q -L qgapython -O ^has_journal -E root_owner=0:0 -d "$R" "$WORK/python.img"
chmod 644 "$WORK/python.img"
mv -f "$WORK/python.img" "$CACHE/python.img"
echo "$STAMP_NEW" >"$CACHE/stamp"
echo "$CACHE/python.img"
