"""The installed ``qga`` on tiny guests, by domain name through libvirt."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from .lab import Lab
from .test_cli import QGA, one_error_line, qga

pytestmark = pytest.mark.vm


def test_exec_echo_prints_hi(lab: Lab) -> None:
    result = qga(lab.ok, "exec", "--", "/bin/echo", "hi")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b"")


def test_exec_exit_status_passes_through(lab: Lab) -> None:
    result = qga(lab.ok, "exec", "--", "/bin/sh", "-c", "echo err >&2; exit 7")
    assert (result.returncode, result.stderr) == (7, b"err\n")


def test_exec_passes_piped_stdin(lab: Lab) -> None:
    data = secrets.token_bytes(100_000)  # above one libvirt request: uploaded in chunks
    result = qga(lab.ok, "exec", "--", "/bin/cat", stdin=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_cp_round_trip_through_libvirt(lab: Lab, tmp_path: Path) -> None:
    data = secrets.token_bytes(300_000)  # several 64 KiB writes, one read
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    assert qga("cp", local, f"{lab.ok}:/mnt/data/").returncode == 0
    size = qga(lab.ok, "shell", "wc -c < /mnt/data/up.bin")
    assert size.stdout.strip() == str(len(data)).encode()
    down = qga(lab.ok, "cp", ":/mnt/data/up.bin", tmp_path / "down.bin")
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "down.bin").read_bytes() == data


def test_missing_domain_is_one_line_naming_it(lab: Lab) -> None:
    result = qga("nosuch", "ping")
    assert result.returncode == 5
    line = one_error_line(result)
    assert "'nosuch'" in line
    assert "not found" in line


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [
        ("none", 5, "has no guest agent channel"),
        ("off", 5, "is shut off: start it first"),
    ],
)
def test_unreachable_domains(lab: Lab, kind: str, code: int, words: str) -> None:
    name = lab.name(kind)
    result = qga(name, "ping")
    assert result.returncode == code
    line = one_error_line(result)
    assert words in line
    assert name in line


def test_wait_for_an_agent_that_never_starts_times_out(lab: Lab) -> None:
    result = qga(lab.never, "wait", "--timeout", "2")
    assert result.returncode == 6
    assert lab.never in one_error_line(result)
    assert qga(lab.ok, "wait", "--timeout", "10").returncode == 0


def test_list(lab: Lab) -> None:
    rows = {
        line.split()[1]: line.split()
        for line in qga("list").stdout.decode().splitlines()[2:]
        if line.split()[1:2] and line.split()[1].startswith(lab.prefix)
    }
    assert rows[lab.ok][2:] == ["running", "connected"]
    assert rows[lab.never][2:] == ["running", "disconnected"]
    assert rows[lab.none][2:] == ["running", "no", "channel"]
    assert rows[lab.sock][3] == "socket"
    assert rows[lab.off][0] == "-"
    assert rows[lab.off][2:4] == ["shut", "off"]
    domains = {d["name"]: d for d in json.loads(qga("list", "--json").stdout)}
    assert domains[lab.ok]["agent_channel"]["state"] == "connected"
    assert domains[lab.none]["agent_channel"] is None
    assert domains[lab.ok]["uuid"] == lab.domain(lab.ok).UUIDString()
    names = qga("list", "--name").stdout.decode().split()
    assert set(lab.created) <= set(names)


def test_helpers_on_a_guest(lab: Lab) -> None:
    fsinfo = qga(lab.ok, "fsinfo").stdout.decode().splitlines()
    assert any(line.split()[:2] == ["/mnt/data", "ext4"] for line in fsinfo)
    osinfo = json.loads(qga(lab.sock, "osinfo", "--json").stdout)  # auto: the raw socket
    assert osinfo["kernel_release"]
    assert qga("--backend", "libvirt", lab.sock, "ping").returncode == 5


def test_freeze_runs_the_host_command_frozen_and_thaws(lab: Lab, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    command = f"{QGA} {lab.ok} fsfreeze-status > {seen}; exit 3"
    result = qga(lab.ok, "freeze", "-m", "/mnt/data", "--", "/bin/sh", "-c", command)
    assert result.returncode == 3, result.stderr  # the host command's status
    assert seen.read_text() == "frozen\n"
    assert qga(lab.ok, "fsfreeze-status").stdout == b"thawed\n"
    counted = json.loads(qga(lab.ok, "freeze", "--json", "-m", "/mnt/data", "--", "true").stdout)
    assert counted == {"frozen": 1, "exit_code": 0}


def test_fleet_across_domains(lab: Lab) -> None:
    result = qga("fleet", lab.ok, lab.sock, lab.none, "--", "get-host-name")
    assert result.returncode == 8
    lines = [line.split(maxsplit=2) for line in result.stdout.decode().splitlines()]
    assert [line[:2] for line in lines] == [[lab.ok, "ok"], [lab.sock, "ok"], [lab.none, "error"]]
    assert "no guest agent channel" in lines[2][2]


# --- several hypervisors (the lab's unix and TCP URIs count as two) ------------------------


def test_list_and_fleet_across_two_uris(lab: Lab) -> None:
    local, tcp = "qemu:///system", "qemu+tcp://127.0.0.1/system"
    listed = qga("-c", local, "-c", tcp, "list", "--name", "--state-running")
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.decode().split()
    assert f"{local}/{lab.ok}" in names
    assert f"{tcp}/{lab.ok}" in names
    table = qga("-c", local, "-c", tcp, "list").stdout.decode().splitlines()
    assert table[0].split()[-1] == "Hypervisor"
    assert any(lab.ok in row and row.rstrip().endswith(tcp) for row in table)

    targets = [f"{local}/{lab.ok}", f"{tcp}/{lab.ok10}"]
    done = qga("-c", local, "-c", tcp, "fleet", *targets, "--", "hostname")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.decode().splitlines()]
    assert [(line[0], line[1], line[2]) for line in lines] == [
        (targets[0], "ok", lab.ok),
        (targets[1], "ok", lab.ok10),
    ]
    report = json.loads(
        qga("-c", local, "-c", tcp, "fleet", *targets, "--json", "--", "ping").stdout
    )
    assert [entry["target"] for entry in report] == targets

    # --all names the domains of every URI, each with its hypervisor
    everything = qga("-c", local, "-c", tcp, "fleet", "--all", "--", "ping").stdout.decode()
    labels = {line.split()[0] for line in everything.splitlines()}
    assert {f"{local}/{lab.ok}", f"{tcp}/{lab.ok}", f"{tcp}/{lab.sock}"} <= labels


def test_several_uris_are_refused_where_they_cannot_apply(lab: Lab) -> None:
    local, tcp = "qemu:///system", "qemu+tcp://127.0.0.1/system"
    domain = qga("-c", local, "-c", tcp, lab.ok, "ping")
    assert domain.returncode == 2
    assert "-c once for a domain's command" in one_error_line(domain)
    plain = qga("-c", local, "-c", tcp, "fleet", lab.ok, "--", "ping")
    assert plain.returncode == 2
    assert f"URI/{lab.ok}" in one_error_line(plain)


def test_list_of_two_uris_with_one_down_lists_the_other_and_exits_8(lab: Lab) -> None:
    down = "qemu+tcp://127.0.0.1:1/system"  # nothing listens on port 1
    done = qga("-c", "qemu:///system", "-c", down, "list", "--name")
    assert done.returncode == 8
    assert f"qemu:///system/{lab.ok}" in done.stdout.decode().split()
    assert "127.0.0.1:1" in one_error_line(done)
