"""One playbook, two Ansible connection plugins, one guest: qga.libvirt.agent vs libvirt_qemu.

The playbook is N small ``raw`` tasks (a command and its output: the per-task cost of a
connection), a 10 MiB ``script`` (a shell script padded with a comment: the upload
alone, as ``script`` runs no Python), then a 10 MiB ``copy`` to the guest and a ``fetch``
of it back (these also run Python modules in the guest: ``stat``, ``copy``), against
one tiny guest with the Python disk, first through this repository's collection
(``qga.libvirt.agent``), then through community.libvirt's ``libvirt_qemu`` plugin, in one
run. A small callback times every task; the figures are per task kind, and the load
average is printed with them (on a shared machine it moves the figures more than
anything else).

community.libvirt comes from the ``ansible`` package on PyPI, which bundles the
community collections (ansible-core alone does not): it is installed on demand, without
its dependencies, into ``/var/cache/qga-libvirt/bench-ansible`` (our venv's
ansible-core runs it), and the bench says which ``ansible`` and community.libvirt
versions it found. Both plugins need the controller's libvirt-python, which the venv has.

    python -m bench.ansible [N]
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import libvirt

from qga_libvirt import GuestAgent
from qga_libvirt.discovery import quiet_libvirt_errors
from scripts import tinyguest
from scripts.collection import REPORT, ansible_env, install_callback, install_collection

BIN = Path(sys.executable).parent
CACHE = Path("/var/cache/qga-libvirt/bench-ansible")
SITE = CACHE / "site"
BIG = 10 << 20


def ensure_community_libvirt() -> tuple[str, str]:
    """Install the ``ansible`` package (collections only) once; its and the plugin's versions.

    Raises:
        RuntimeError: pip failed, or the package does not bundle community.libvirt's
            libvirt_qemu connection plugin.
    """
    plugin = SITE / "ansible_collections/community/libvirt/plugins/connection/libvirt_qemu.py"
    if not plugin.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        pip = subprocess.run(
            [BIN / "pip", "install", "-q", "--no-deps", "--target", str(SITE), "ansible"],
            capture_output=True,
            text=True,
            check=False,
        )
        if pip.returncode != 0:
            raise RuntimeError(f"pip install ansible failed: {pip.stderr.strip()}")
    if not plugin.is_file():
        raise RuntimeError(
            "the ansible package from PyPI does not bundle community.libvirt's libvirt_qemu "
            f"connection plugin (looked for {plugin})"
        )
    (dist,) = SITE.glob("ansible-*.dist-info")
    manifest = json.loads(
        (SITE / "ansible_collections/community/libvirt/MANIFEST.json").read_text()
    )
    return dist.name.removeprefix("ansible-").removesuffix(".dist-info"), str(
        manifest["collection_info"]["version"]
    )


def playbook(n: int, big: Path) -> str:
    small = "\n".join(f"    - {{name: small, raw: echo {i}}}" for i in range(n))
    return (
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        f"{small}\n"
        f"    - {{name: upload 10 MiB, script: {big}.sh}}\n"
        f"    - {{name: copy 10 MiB, copy: {{src: {big}, dest: /tmp/big.bin}}}}\n"
        "    - name: fetch 10 MiB\n"
        f"      fetch: {{src: /tmp/big.bin, dest: {big}.back, flat: true}}\n"
    )


def run_playbook(
    home: Path, collections: str, domain: str, connection: str, n: int, big: Path
) -> tuple[list[dict[str, Any]], float, bool]:
    work = home / connection.replace(".", "_")
    work.mkdir()
    (work / "play.yml").write_text(playbook(n, big))
    (work / "hosts.ini").write_text(
        f"{domain} ansible_connection={connection} ansible_python_interpreter=/usr/bin/python3\n"
    )
    (work / "ansible.cfg").write_text(
        textwrap.dedent(f"""\
            [defaults]
            collections_path = {collections}
            callback_plugins = {home / "callbacks"}
            host_key_checking = false
            retry_files_enabled = false
            """)
    )
    env = ansible_env(work / "ansible.cfg", work / "home")
    Path(f"{big}.back").unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.run(
        [BIN / "ansible-playbook", "-i", "hosts.ini", "play.yml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.monotonic() - start
    timings: list[dict[str, Any]] = json.loads((work / REPORT).read_text())["tasks"]
    back = Path(f"{big}.back")
    intact = back.is_file() and _sha(back) == _sha(big)
    if proc.returncode != 0:
        print(f"  ({connection}: ansible-playbook exit {proc.returncode})")
    return timings, wall, intact


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary(timings: list[dict[str, Any]], task: str) -> str:
    rows = [t for t in timings if t["task"] == task]
    if not rows:
        return "did not run"
    bad = [t for t in rows if t["status"] != "ok"]
    if bad:
        return f"{bad[0]['status']}: {str(bad[0]['result'].get('msg', ''))[:60]}"
    seconds = [t["seconds"] for t in rows]
    if len(rows) == 1:
        rate = f"  {BIG / seconds[0] / 2**20:6.2f} MiB/s" if "MiB" in task else ""
        return f"{seconds[0]:7.2f} s{rate}"
    return f"{statistics.median(seconds):7.3f} s median of {len(rows)}"


def main(n: int = 20) -> None:
    quiet_libvirt_errors()  # a program: libvirt's printed errors would garble the tables
    ansible_version, libvirt_version = ensure_community_libvirt()
    print(
        f"Ansible, {n} raw tasks + 10 MiB copy + fetch, one TCG tiny guest with Python; "
        f"ansible {ansible_version} from PyPI bundles community.libvirt {libvirt_version}"
    )
    conn = libvirt.open("qemu:///system")
    name = f"qgabench{os.getpid()}-ans"
    tinyguest.destroy(conn, name)
    tinyguest.start(conn, name, python_disk=tinyguest.build_python_disk(), data_disk=False)
    try:
        GuestAgent.from_domain(name, conn).wait_for_agent(300)
        with tempfile.TemporaryDirectory(prefix="qga-bench-ansible-") as tmp:
            home = Path(tmp)
            install_callback(home)
            big = home / "big.bin"
            big.write_bytes(os.urandom(BIG))
            padding = b"#" * (BIG - 64) + b"\n"
            Path(f"{big}.sh").write_bytes(b"#!/bin/sh\necho uploaded\nexit 0\n" + padding)
            ours = str(install_collection(home))
            contenders = {
                "qga.libvirt.agent": ours,
                "community.libvirt.libvirt_qemu": f"{ours}:{SITE}",
            }
            results = {
                connection: run_playbook(home, path, name, connection, n, big)
                for connection, path in contenders.items()
            }
    finally:
        tinyguest.destroy(conn, name)
    width = max(len(c) for c in results)
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    for task in ("small", "upload 10 MiB", "copy 10 MiB", "fetch 10 MiB"):
        print(f"  {task}:")
        for connection, (timings, _, _) in results.items():
            print(f"    {connection:<{width}} {summary(timings, task)}")
    print("  whole playbook (wall, ansible-playbook start included):")
    for connection, (_, wall, intact) in results.items():
        print(f"    {connection:<{width}} {wall:7.1f} s  fetched copy intact: {intact}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
