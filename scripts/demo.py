"""The demo: boot a tiny VM under libvirt and use the library on it, by name.

Run by `make demo` (which installs what is missing first). Starts libvirtd if needed,
builds the tiny guest from this machine's packages (cached), boots the transient domain
`qga-demo` (or reuses it), and shows the library and the `qga` command at work. The
domain is left running: `virsh destroy qga-demo` removes it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from qga_libvirt import GuestAgent, GuestAgentError, list_domains
from qga_libvirt.discovery import open_connection, quiet_libvirt_errors
from scripts import tinyguest

NAME = "qga-demo"
ROOT = Path(__file__).resolve().parent.parent


def human(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def boot() -> None:
    conn = open_connection("qemu:///system")
    running = {d.name: d for d in list_domains(conn)}
    if NAME in running and running[NAME].running:
        print(f"== domain {NAME} is already running: reusing it")
        return
    if NAME in running:
        tinyguest.destroy(conn, NAME)
    print("== building the tiny guest (kernel, busybox, qemu-ga; cached)")
    image = tinyguest.build()
    print(f"== booting transient TCG domain {NAME}")
    tinyguest.start(conn, NAME, image, agent="libvirt", data_disk=True, nic=True)


def main() -> int:
    quiet_libvirt_errors()  # a program: the library's errors say what libvirt said
    subprocess.run([str(ROOT / "scripts" / "libvirtd-up.sh")], check=True)
    boot()
    agent = GuestAgent.from_domain(NAME)
    start = time.monotonic()
    agent.wait_for_agent(180)
    print(f"== agent answered after {time.monotonic() - start:.1f} s\n")

    print("$ list_domains()")
    for d in list_domains():
        channel = d.agent_channel.state if d.agent_channel else "no channel"
        print(f"  {d.name:24} {d.state:10} agent: {channel}")

    info = agent.info()
    enabled = sum(c.enabled for c in info.supported_commands)
    print(f"\n$ agent.info()\n  qemu-ga {info.version}, {enabled} commands enabled")
    os_info = agent.get_osinfo()
    print(f"\n$ agent.get_osinfo()\n  {os_info.pretty_name}, kernel {os_info.kernel_release}")
    print("\n$ agent.network_get_interfaces()")
    for iface in agent.network_get_interfaces():
        addrs = ", ".join(f"{a.ip_address}/{a.prefix}" for a in iface.ip_addresses or [])
        print(f"  {iface.name:8} {iface.hardware_address or '':18} {addrs}")
    print("\n$ agent.get_fsinfo()")
    for fs in agent.get_fsinfo():
        print(f"  {fs.mountpoint:12} {fs.type:6} {human(fs.used_bytes)} of {human(fs.total_bytes)}")
    print("\n$ agent.run(['/bin/uname', '-a'])")
    result = agent.run(["/bin/uname", "-a"])
    took = result.duration * 1000
    print(f"  exit {result.exitcode} in {took:.0f} ms: {result.stdout_text().strip()}")
    agent.write_file("/mnt/data/hello.txt", b"written from the host\n")
    print("\n$ agent.read_file('/mnt/data/hello.txt')")
    print(f"  {agent.read_file('/mnt/data/hello.txt')!r}")
    qga = str(Path(sys.executable).parent / "qga")
    for argv in (["list"], [NAME, "ifaddr"], [NAME, "exec", "--", "/bin/echo", "hi"]):
        print(f"\n$ qga {' '.join(argv)}")
        sys.stdout.flush()
        subprocess.run([qga, *argv], check=True)
    print(f"\nThe domain {NAME} is left running. Remove it with: virsh destroy {NAME}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GuestAgentError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(1)
