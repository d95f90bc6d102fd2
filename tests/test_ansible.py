"""The Ansible collection (ansible/qga/libvirt) on real agents, through ansible-playbook.

The collection is built with ``ansible-galaxy collection build`` and installed from the
tarball into a temporary collections path, as a user would. Each scenario group is ONE
playbook run (Ansible starts slowly, the guests are TCG): results come back through a
small callback plugin (Ansible's json callback left ansible-core), checked per task.

Guests: the lab's busybox guests (no Python: ``raw`` and ``script`` only) and one tiny
guest with the read-only Python disk, where real modules run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from qga_libvirt import GuestAgent
from qga_libvirt.testing import HostAgent
from scripts import tinyguest
from scripts.collection import REPORT, ansible_env, install_callback, install_collection

from .lab import LOCAL_URI, TCP_URI, Lab, libvirtd_up

pytestmark = pytest.mark.vm

BIN = Path(sys.executable).parent
CONNECTION = "qga.libvirt.agent"


@dataclass
class Ansible:
    """An installed collection and a minimal ansible.cfg, in a directory of their own."""

    home: Path

    def env(self) -> dict[str, str]:
        return ansible_env(self.home / "ansible.cfg", self.home / "home")

    def tool(
        self, name: str, *args: str, timeout: float, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run Ansible's command ``name`` (``ansible-doc``...) with this installation."""
        return subprocess.run(
            [BIN / name, *args],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def playbook(
        self,
        inventory: str | Path,
        play: str,
        *,
        timeout: float = 600,
        files: dict[str, str] | None = None,
    ) -> Run:
        """Run one playbook (its YAML text) with this inventory; ``files`` beside it."""
        work = self.home / f"run{time.monotonic_ns()}"
        work.mkdir()
        for name, text in (files or {}).items():
            (work / name).write_text(text)
        (work / "play.yml").write_text(textwrap.dedent(play))
        proc = self.tool(
            "ansible-playbook", "-i", str(inventory), "play.yml", cwd=work, timeout=timeout
        )
        return Run(proc, work)

    def inventory(self, path: Path) -> dict[str, Any]:
        proc = self.tool("ansible-inventory", "-i", str(path), "--list", timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        result: dict[str, Any] = _trusted(json.loads(proc.stdout))
        return result


def _trusted(value: Any) -> Any:
    """``--list`` output with Ansible's untrusted-value markers taken off.

    Ansible marks what an inventory plugin reports as untrusted (never templated), which
    is right for what guests say about themselves.
    """
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


@dataclass
class Run:
    """One ansible-playbook run: its process and its JSON report."""

    proc: subprocess.CompletedProcess[str]
    work: Path

    @property
    def output(self) -> str:
        return f"{self.proc.stdout[-4000:]}\n{self.proc.stderr[-4000:]}"

    @property
    def report(self) -> dict[str, Any]:
        path = self.work / REPORT
        if not path.exists():
            pytest.fail(f"no report from ansible-playbook: {self.output}")
        report: dict[str, Any] = json.loads(path.read_text())
        return report

    def task(self, name: str, host: str) -> dict[str, Any]:
        """The result of the task called ``name`` on ``host``."""
        for task in self.report["tasks"]:
            if task["task"] == name and task["host"] == host:
                result: dict[str, Any] = task["result"]
                return result
        pytest.fail(f"no task {name!r} ran on {host}: {self.output}")

    def stats(self, host: str) -> dict[str, int]:
        stats: dict[str, int] = self.report["stats"][host]
        return stats


@pytest.fixture(scope="session")
def python_guest() -> Iterator[str]:
    """A tiny guest with the Python disk, booted only for the test that needs it (a TCG
    guest running all session long costs every other test CPU)."""
    libvirtd_up()
    conn = libvirt.open(LOCAL_URI)
    name = f"qgat{os.getpid()}-py"
    tinyguest.destroy(conn, name)
    tinyguest.start(conn, name, python_disk=tinyguest.build_python_disk(), data_disk=False)
    try:
        yield name
    finally:
        tinyguest.destroy(conn, name)
        conn.close()


@pytest.fixture(scope="session")
def python_ready(python_guest: str) -> str:
    GuestAgent.from_domain(python_guest, LOCAL_URI).wait_for_agent(300)
    return python_guest


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Ansible:
    """The collection built from its source and installed from the tarball."""
    home = tmp_path_factory.mktemp("ansible")
    collections = install_collection(home)
    installed = collections / "ansible_collections" / "qga" / "libvirt"
    assert (installed / "plugins" / "connection" / "agent.py").is_file()
    callbacks = install_callback(home)
    (home / "ansible.cfg").write_text(
        textwrap.dedent(f"""\
            [defaults]
            collections_path = {collections}
            callback_plugins = {callbacks}
            host_key_checking = false
            retry_files_enabled = false
            interpreter_python = /usr/bin/python3
            forks = 8

            [inventory]
            enable_plugins = qga.libvirt.domains, ini
            """)
    )
    return Ansible(home)


def ini(tmp_path: Path, *hosts: str, **variables: str) -> Path:
    """An INI inventory: the hosts in group ``g`` with the qga connection and ``variables``."""
    lines = ["[g]", *hosts, "[g:vars]", f"ansible_connection={CONNECTION}"]
    lines += [f"{k}={v}" for k, v in variables.items()]
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- no VM ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "option"),
    [("connection", CONNECTION, "command_timeout"), ("inventory", "qga.libvirt.domains", "uris")],
)
def test_ansible_doc_renders_the_plugin_documentation(
    ansible: Ansible, kind: str, name: str, option: str
) -> None:
    doc = ansible.tool("ansible-doc", "--json", "-t", kind, name, timeout=120)
    assert doc.returncode == 0, doc.stderr
    entry = json.loads(doc.stdout)[name]["doc"]
    assert option in entry["options"]
    assert all(isinstance(note, str) for note in entry.get("notes", []))


def test_python_disk_is_attached_read_only_after_the_data_disk() -> None:
    image = tinyguest.GuestImage(Path("/k"), Path("/i"), Path("/d"))
    xml = tinyguest.domain_xml(
        "t", image, agent="libvirt", data_disk=Path("/data.img"), python_disk=Path("/py.img")
    )
    disks = ET.fromstring(xml).findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == ["/data.img", "/py.img"]  # type: ignore[union-attr]
    python = disks[1]
    assert python.find("readonly") is not None
    assert python.findtext("serial") == tinyguest.PYTHON_DISK_SERIAL
    assert disks[0].find("readonly") is None


# --- the host's own agent on a socket ---------------------------------------------------


@pytest.mark.agent
def test_socket_option_stdin_and_failures_on_the_host_agent(
    ansible: Ansible, host_agent: HostAgent, tmp_path: Path
) -> None:
    inventory = ini(tmp_path, "hostagent", ansible_qga_socket=str(host_agent.socket))
    run = ansible.playbook(
        inventory,
        """\
        - hosts: all
          gather_facts: false
          tasks:
            - name: stdin
              command: cat
              args: {stdin: "through stdin"}
              register: r
            - name: fails
              command: sh -c 'echo broken >&2; exit 3'
              ignore_errors: true
            - name: too long
              raw: sleep 3
              vars: {ansible_qga_command_timeout: 1}
              ignore_errors: true
        """,
    )
    assert run.task("stdin", "hostagent")["stdout"] == "through stdin"
    failed = run.task("fails", "hostagent")
    assert failed["failed"] is True
    assert (failed["rc"], failed["stderr"]) == (3, "broken")
    late = run.task("too long", "hostagent")
    assert late["failed"] is True
    assert "longer than command_timeout (1 s)" in late["msg"]


@pytest.mark.agent
def test_agent_killed_mid_command_is_unreachable(ansible: Ansible, tmp_path: Path) -> None:
    with HostAgent(tmp_path / "agent") as agent:  # our own: this test kills it
        assert agent.process is not None
        inventory = ini(tmp_path, "dying", ansible_qga_socket=str(agent.socket))
        run = ansible.playbook(
            inventory,
            f"""\
            - hosts: all
              gather_facts: false
              tasks:
                - name: kill the agent
                  raw: kill -9 {agent.process.pid}; sleep 1
            """,
        )
    assert "Traceback" not in run.output
    assert run.stats("dying")["unreachable"] == 1
    result = run.task("kill the agent", "dying")
    assert result["unreachable"] is True
    assert "running a command failed" in result["msg"]


# --- the busybox guest: no Python ------------------------------------------------------


def test_raw_script_and_become_on_the_busybox_guest(
    ansible: Ansible, lab: Lab, tmp_path: Path
) -> None:
    inventory = ini(tmp_path, lab.ok, ansible_libvirt_uri=TCP_URI)
    run = ansible.playbook(
        inventory,
        """\
        - hosts: all
          gather_facts: false
          tasks:
            - name: raw
              raw: echo out; echo err >&2; uname -n
              register: r
            - name: script
              script: probe.sh one "two words"
            - name: become su
              raw: id -un
              become: true
              become_method: su
              become_user: tester
            - name: raw fails
              raw: echo gone wrong >&2; exit 4
              ignore_errors: true
            - name: big output
              raw: head -c 5000000 /dev/zero | tr '\\0' x
        """,
        files={"probe.sh": '#!/bin/sh\necho "args: $1|$2"; echo "on $(hostname)" >&2\nexit 0\n'},
    )
    assert run.proc.returncode == 0, run.output
    raw = run.task("raw", lab.ok)
    assert raw["rc"] == 0
    assert raw["stdout_lines"] == ["out", lab.ok]
    assert raw["stderr"] == "err\n"
    script = run.task("script", lab.ok)
    assert script["stdout_lines"] == ["args: one|two words"]
    assert script["stderr"] == f"on {lab.ok}\n"
    assert run.task("become su", lab.ok)["stdout_lines"] == ["tester"]
    failed = run.task("raw fails", lab.ok)
    assert (failed["failed"], failed["rc"], failed["stderr"]) == (True, 4, "gone wrong\n")
    # Above libvirt's ~4 MiB reply limit: the library captures it in guest files.
    assert run.task("big output", lab.ok)["stdout"] == "x" * 5_000_000


def test_unreachable_domains_are_unreachable_not_tracebacks(
    ansible: Ansible, lab: Lab, tmp_path: Path
) -> None:
    missing = f"{lab.prefix}-missing"
    inventory = ini(tmp_path, lab.never, lab.off, missing, ansible_qga_timeout="5")
    run = ansible.playbook(
        inventory,
        """\
        - hosts: all
          gather_facts: false
          tasks:
            - name: raw
              raw: "true"
        """,
    )
    assert run.proc.returncode == 4, run.output  # 4: some host unreachable
    assert "Traceback" not in run.proc.stdout + run.proc.stderr
    words = {lab.never: "not connected", lab.off: "shut off", missing: "not found"}
    for host, says in words.items():
        assert run.stats(host)["unreachable"] == 1
        result = run.task("raw", host)
        assert result["unreachable"] is True
        assert says in result["msg"], result["msg"]


# --- the inventory ---------------------------------------------------------------------


def test_inventory_lists_domains_of_both_uris_once_with_agent_facts(
    ansible: Ansible, lab: Lab, tmp_path: Path
) -> None:
    path = tmp_path / "lab.qga_libvirt.yml"
    path.write_text(
        textwrap.dedent(f"""\
            plugin: qga.libvirt.domains
            uris: ["{LOCAL_URI}", "{TCP_URI}"]
            names: ["{lab.prefix}-*"]
            agent_timeout: 10
            keyed_groups:
              - key: qga_os.version_id | default('none')
                prefix: osv
            """)
    )
    inventory = ansible.inventory(path)
    hostvars = inventory["_meta"]["hostvars"]
    names = {lab.ok, lab.sock, lab.none, lab.never, lab.off}
    assert names <= set(hostvars)  # once each, though both URIs reach the same libvirtd
    ok = hostvars[lab.ok]
    assert ok["ansible_connection"] == CONNECTION
    assert ok["qga_agent"] == "connected", ok.get("qga_agent_error")
    assert ok["qga_agent_version"]
    assert ok["qga_hostname"] == lab.ok
    assert ok["qga_os"]["id"] == "tinyqga"
    assert "lo" in ok["qga_interfaces"]
    assert hostvars[lab.sock]["qga_agent"] == "connected"  # a raw-socket channel
    assert hostvars[lab.none]["qga_agent"] == "no agent channel"
    assert hostvars[lab.off]["qga_agent"] == "domain not running"
    assert hostvars[lab.never]["qga_agent"] in ("not connected", "not answering")
    assert hostvars[lab.never]["qga_agent_error"]

    def group(name: str) -> set[str]:
        return set(inventory.get(name, {}).get("hosts", []))

    assert {lab.ok, lab.sock} <= group("qga_agent_ok")
    assert {lab.none, lab.never, lab.off} <= group("qga_agent_unavailable")
    assert {lab.ok, lab.sock} <= group("os_tinyqga")
    assert lab.off in group("state_shut_off")
    assert lab.ok in group("state_running")
    assert lab.ok in group("osv_1_0")
    hypervisors = [g for g in inventory if g.startswith("hypervisor_")]
    assert len(hypervisors) == 1
    assert names <= group(hypervisors[0])


# --- the Python guest: real modules ----------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("QGA_SLOW_TESTS") != "1",
    reason="3-8 minutes of Python module runs on a TCG guest: QGA_SLOW_TESTS=1 runs it",
)
@pytest.mark.timeout(900)  # ten Python module runs on a TCG guest: slow when the host is busy
def test_modules_and_10_mib_round_trip_on_the_python_guest(
    python_ready: str, ansible: Ansible, tmp_path: Path
) -> None:
    host = python_ready
    inventory = tmp_path / "py.qga_libvirt.yml"
    inventory.write_text(f'plugin: qga.libvirt.domains\nuris: ["{LOCAL_URI}"]\nnames: ["{host}"]\n')
    big = os.urandom(10 << 20)
    digest = hashlib.sha1(big).hexdigest()
    (tmp_path / "big.bin").write_bytes(big)
    run = ansible.playbook(
        inventory,
        f"""\
        - hosts: qga_agent_ok
          gather_facts: true
          gather_subset: [min]
          tasks:
            - name: facts
              debug:
                msg: "{{{{ ansible_facts.hostname }}}} {{{{ ansible_facts.python_version }}}}"
            - name: file
              file: {{path: /tmp/t, state: directory, mode: "0750"}}
            - name: template
              template: {{src: t.j2, dest: /tmp/t/t.txt, mode: "0640"}}
            - name: copy
              copy: {{src: {tmp_path}/big.bin, dest: /tmp/t/big.bin}}
            - name: stat
              stat: {{path: /tmp/t/big.bin, checksum_algorithm: sha1}}
            - name: fetch
              fetch: {{src: /tmp/t/big.bin, dest: {tmp_path}/back.bin, flat: true}}
            - name: command
              command: cat /tmp/t/t.txt
            - name: become
              command: id -un
              become: true
              become_method: su
              become_user: tester
        """,
        timeout=850,
        files={"t.j2": "{{ inventory_hostname }} runs {{ qga_os.pretty_name }}\n"},
    )
    assert run.proc.returncode == 0, run.output
    assert run.task("facts", host)["msg"].startswith(f"{host} 3.11")
    assert run.task("file", host)["mode"] == "0750"
    template = run.task("template", host)
    assert (template["changed"], template["mode"]) == (True, "0640")
    assert run.task("copy", host)["checksum"] == digest
    stat = run.task("stat", host)["stat"]
    assert (stat["size"], stat["checksum"]) == (len(big), digest)
    assert hashlib.sha1((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert run.task("command", host)["stdout"] == f"{host} runs Tiny QGA guest 1.0"
    assert run.task("become", host)["stdout"] == "tester"
