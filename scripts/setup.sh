#!/usr/bin/env bash
# Installs what qga-libvirt's tests and demo need, and nothing twice:
# Debian packages (only when one is missing), a .venv, the package with all its extras
# (only when pyproject.toml changed): mcp (the MCP server) and dev (tests, linters, the
# wheel's build backend). Safe to run again; fast when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-guest-agent qemu-utils
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc
  busybox-static linux-image-amd64 e2fsprogs cpio kmod zstd xz-utils
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "setup: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.qga-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing qga-libvirt[mcp,dev] into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[mcp,dev]'
  echo "$want" >"$stamp"
fi
# Every runtime dependency as a wheel: tests/test_wheel.py installs the built wheel into a
# fresh venv from these, offline and in seconds (WHEELHOUSE there names this directory).
wheelhouse=.venv/wheelhouse
if [[ ! -f $wheelhouse/.stamp || $(cat "$wheelhouse/.stamp") != "$want" ]]; then
  echo "setup: collecting the runtime dependencies' wheels into $wheelhouse"
  rm -rf "$wheelhouse"
  .venv/bin/pip wheel -q -w "$wheelhouse" '.[mcp]'
  rm -f "$wheelhouse"/qga_libvirt-*.whl  # the test builds its own, from the tree as it is
  echo "$want" >"$wheelhouse/.stamp"
fi

# A second agent generation for the real-agent tests: qemu-guest-agent from Debian's
# bookworm-backports (10.0), built for this Debian 12 machine and run with the system's
# own libraries. A private APT configuration downloads the package without touching the
# system's sources, lists or installed packages; dpkg-deb unpacks it into the cache.
# qga_libvirt.testing.AGENT_CACHE_DIR names the same directory.
AGENT_CACHE=${QGA_AGENT_CACHE:-/var/cache/qga-libvirt/agents}
backports=$AGENT_CACHE/bookworm-backports
if ! "$backports/root/usr/bin/qemu-ga" -V >/dev/null 2>&1; then
  echo "setup: fetching qemu-guest-agent from bookworm-backports into $backports"
  apt_dir=$backports/apt
  mkdir -p "$apt_dir"/{lists/partial,archives/partial,sources.list.d,apt.conf.d,preferences.d}
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
    >"$apt_dir/sources.list"
  : >"$apt_dir/preferences"
  cat >"$apt_dir/apt.conf" <<CONF
Dir::State "$apt_dir";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$apt_dir";
Dir::Cache::archives "$apt_dir/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc::SourceList "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::Etc::Parts "$apt_dir/apt.conf.d";
Dir::Etc::Preferences "$apt_dir/preferences";
Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
CONF
  export APT_CONFIG=$apt_dir/apt.conf
  apt-get -qq update
  rm -f "$apt_dir"/qemu-guest-agent_*.deb
  (cd "$apt_dir" && apt-get -qq download qemu-guest-agent/bookworm-backports)
  unset APT_CONFIG
  rm -rf "$backports/root.new"
  dpkg-deb -x "$apt_dir"/qemu-guest-agent_*.deb "$backports/root.new"
  # Debian 12 merged /usr: the package ships /usr/sbin/qemu-ga; a stable path for callers.
  mkdir -p "$backports/root.new/usr/bin"
  ln -sf ../sbin/qemu-ga "$backports/root.new/usr/bin/qemu-ga"
  "$backports/root.new/usr/sbin/qemu-ga" -V >/dev/null
  rm -rf "$backports/root"
  mv "$backports/root.new" "$backports/root"
fi
