"""The declarations, the arguments they put on the wire and the replies they parse.

No agent here: a FakeTransport records every request and answers with replies written
from the protocol reference, including fields and values a newer agent would add.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, assert_type

import pytest

from qga_libvirt import (
    AgentCommandError,
    CommandDisabledError,
    FakeTransport,
    GuestAgent,
    GuestFrozenError,
    ProtocolError,
    Reply,
    Request,
)
from qga_libvirt.commands import Command, Commands, all_commands, by_method_name, by_wire_name
from qga_libvirt.models import (
    CaptureOutputMode,
    CpuStatsType,
    DeviceInfo,
    DeviceType,
    DiskBusType,
    DiskInfo,
    ExecStatus,
    FileRead,
    FsfreezeStatus,
    FstrimResult,
    IpAddressType,
    LinuxCpuStats,
    LoadAverage,
    LogicalProcessor,
    MemoryBlock,
    MemoryBlockResponse,
    MemoryBlockResponseType,
    NetworkInterface,
    NetworkRoute,
    NvmeSmart,
    OtherCpuStats,
    OtherDeviceId,
    OtherDiskSmart,
    PciDeviceId,
    SeekWhence,
    ShutdownMode,
)
from qga_libvirt.protocol import Base64Text

# The 44 commands of the reference table (QEMU 10/11), copied from it.
REFERENCE = frozenset(
    {
        "guest-sync-delimited",
        "guest-sync",
        "guest-ping",
        "guest-get-time",
        "guest-set-time",
        "guest-info",
        "guest-shutdown",
        "guest-file-open",
        "guest-file-close",
        "guest-file-read",
        "guest-file-write",
        "guest-file-seek",
        "guest-file-flush",
        "guest-fsfreeze-status",
        "guest-fsfreeze-freeze",
        "guest-fsfreeze-freeze-list",
        "guest-fsfreeze-thaw",
        "guest-fstrim",
        "guest-suspend-disk",
        "guest-suspend-ram",
        "guest-suspend-hybrid",
        "guest-network-get-interfaces",
        "guest-get-vcpus",
        "guest-set-vcpus",
        "guest-get-disks",
        "guest-get-fsinfo",
        "guest-set-user-password",
        "guest-get-memory-blocks",
        "guest-set-memory-blocks",
        "guest-get-memory-block-info",
        "guest-exec",
        "guest-exec-status",
        "guest-get-host-name",
        "guest-get-users",
        "guest-get-timezone",
        "guest-get-osinfo",
        "guest-get-devices",
        "guest-ssh-get-authorized-keys",
        "guest-ssh-add-authorized-keys",
        "guest-ssh-remove-authorized-keys",
        "guest-get-diskstats",
        "guest-get-cpustats",
        "guest-get-load",
        "guest-network-get-route",
    }
)

NO_REPLY = {"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"}
FROZEN_SAFE = {
    "guest-ping",
    "guest-info",
    "guest-sync",
    "guest-sync-delimited",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
}
CHANGES_GUEST = {
    "guest-set-time",
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-file-open",
    "guest-file-write",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-exec",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-set-user-password",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
}


def fake_agent(
    answers: dict[str, Any] | Callable[[Request], Any],
) -> tuple[GuestAgent, FakeTransport]:
    """An agent over a FakeTransport answering ``answers[command]`` (or a function)."""
    handler = answers if callable(answers) else (lambda request: answers[request.command])
    transport = FakeTransport(handler)
    return GuestAgent(transport), transport


def sent(transport: FakeTransport, index: int = -1) -> tuple[str, Any]:
    """The command and its arguments as the wire has them (base64 as its text)."""
    request = transport.requests[index]
    arguments = request.arguments
    if arguments is not None:
        arguments = {
            key: str(value) if isinstance(value, Base64Text) else value
            for key, value in arguments.items()
        }
    return request.command, arguments


# --- the declarations -----------------------------------------------------------------


def test_every_reference_command_is_declared_exactly_once() -> None:
    wires = [cmd.wire for cmd in all_commands()]
    assert len(wires) == len(set(wires)) == 44
    assert set(wires) == REFERENCE


@pytest.mark.parametrize("wire", sorted(REFERENCE))
def test_method_name_is_the_wire_name_without_guest(wire: str) -> None:
    method = wire.removeprefix("guest-").replace("-", "_")
    declared = by_wire_name(wire)
    assert declared is not None
    assert declared.method == method
    assert getattr(Commands, method) is declared
    assert by_method_name(method) is declared
    assert callable(getattr(GuestAgent, method).build)


def test_naming_examples_from_the_issue() -> None:
    expected = {
        "guest-get-osinfo": "get_osinfo",
        "guest-file-open": "file_open",
        "guest-exec-status": "exec_status",
        "guest-get-host-name": "get_host_name",
        "guest-network-get-interfaces": "network_get_interfaces",
    }
    for wire, method in expected.items():
        assert getattr(Commands, method).wire == wire


@pytest.mark.parametrize("cmd", list(all_commands()), ids=lambda cmd: cmd.wire)
def test_every_declaration_is_documented(cmd: Command[Any, Any]) -> None:
    assert cmd.summary, f"{cmd.wire} has no doc line"
    assert len(cmd.summary) <= 100
    assert cmd.facts.since[0].isdigit()
    assert cmd.facts.platforms
    assert cmd.doc == getattr(GuestAgent(FakeTransport(lambda r: None)), cmd.method).__doc__


def test_facts_match_the_reference() -> None:
    commands = list(all_commands())
    assert {c.wire for c in commands if not c.facts.replies} == NO_REPLY
    assert {c.wire for c in commands if c.facts.frozen_safe} == FROZEN_SAFE
    assert {c.wire for c in commands if c.facts.changes_guest} == CHANGES_GUEST
    assert all(c.reply is None for c in commands if c.wire in NO_REPLY)


def test_unknown_names_are_not_declared() -> None:
    assert by_wire_name("guest-nosuch") is None
    assert by_method_name("nosuch") is None
    assert by_method_name("guest-ping") is None


# --- arguments on the wire -------------------------------------------------------------


def test_set_time_sends_nanoseconds_or_nothing() -> None:
    agent, transport = fake_agent({"guest-set-time": {}})
    assert agent.set_time(1_700_000_000_123_456_789) is None
    assert sent(transport) == ("guest-set-time", {"time": 1_700_000_000_123_456_789})
    agent.set_time()
    assert sent(transport) == ("guest-set-time", None)


def test_set_user_password_encodes_it_and_never_shows_it() -> None:
    password = "s3cr3t-pässwörd"
    agent, transport = fake_agent({"guest-set-user-password": {}})
    agent.set_user_password("alice", password)
    command, arguments = sent(transport)
    assert command == "guest-set-user-password"
    assert arguments == {
        "username": "alice",
        "password": base64.b64encode(password.encode()).decode(),
        "crypted": False,
    }
    agent.set_user_password("bob", "$6$salt$hash", crypted=True)
    assert sent(transport)[1]["crypted"] is True

    refused, _ = fake_agent(lambda r: Reply(error_class="GenericError", desc="chpasswd: failed"))
    with pytest.raises(AgentCommandError) as error:
        refused.set_user_password("alice", password)
    shown = f"{error.value} {error.value!r} {error.value.desc}"
    assert password not in shown
    assert arguments["password"] not in shown


def test_set_vcpus_sends_the_wanted_state_only() -> None:
    agent, transport = fake_agent({"guest-set-vcpus": 2})
    vcpus = [
        LogicalProcessor(logical_id=1, online=False, can_offline=True),
        LogicalProcessor.model_validate({"logical-id": 2, "online": True, "future": 1}),
    ]
    assert agent.set_vcpus(vcpus) == 2
    assert sent(transport) == (
        "guest-set-vcpus",
        {"vcpus": [{"logical-id": 1, "online": False}, {"logical-id": 2, "online": True}]},
    )


def test_set_memory_blocks_arguments_and_responses() -> None:
    reply = [
        {"phys-index": 7, "response": "success"},
        {"phys-index": 8, "response": "operation-failed", "error-code": 16, "hint": "busy"},
        {"phys-index": 9, "response": "retry-later"},
    ]
    agent, transport = fake_agent({"guest-set-memory-blocks": reply})
    blocks = [MemoryBlock(phys_index=index, online=False) for index in (7, 8, 9)]
    responses = agent.set_memory_blocks(blocks)
    assert sent(transport) == (
        "guest-set-memory-blocks",
        {"mem-blks": [{"phys-index": i, "online": False} for i in (7, 8, 9)]},
    )
    assert [r.phys_index for r in responses] == [7, 8, 9]
    assert responses[0].response is MemoryBlockResponseType.SUCCESS
    assert responses[0].error_code is None
    assert responses[1].error_code == 16
    assert responses[1].extras == {"hint": "busy"}
    assert isinstance(responses[2].response, MemoryBlockResponseType)
    assert responses[2].response == "retry-later"
    assert not responses[2].response.known


@pytest.mark.parametrize("mode", [None, *ShutdownMode])
def test_shutdown_expects_no_reply(mode: ShutdownMode | None) -> None:
    agent, transport = fake_agent({"guest-shutdown": None})
    assert agent.shutdown(mode) is None
    request = transport.requests[-1]
    assert request.command == "guest-shutdown"
    assert request.replies is False
    assert request.arguments == (None if mode is None else {"mode": mode.value})


@pytest.mark.parametrize("method", ["suspend_disk", "suspend_ram", "suspend_hybrid"])
def test_suspend_expects_no_reply(method: str) -> None:
    agent, transport = fake_agent(lambda request: None)
    assert getattr(agent, method)() is None
    request = transport.requests[-1]
    assert request.command == "guest-" + method.replace("_", "-")
    assert request.replies is False
    assert request.arguments is None


def test_fsfreeze_freeze_list_and_thaw() -> None:
    agent, transport = fake_agent(
        {"guest-fsfreeze-freeze": 3, "guest-fsfreeze-freeze-list": 2, "guest-fsfreeze-thaw": 2}
    )
    assert agent.fsfreeze_freeze() == 3
    assert sent(transport) == ("guest-fsfreeze-freeze", None)
    assert agent.fsfreeze_freeze_list(("/", "/boot")) == 2
    assert sent(transport) == ("guest-fsfreeze-freeze-list", {"mountpoints": ["/", "/boot"]})
    agent.fsfreeze_freeze_list()
    assert sent(transport) == ("guest-fsfreeze-freeze-list", None)
    assert agent.fsfreeze_thaw() == 2
    assert sent(transport) == ("guest-fsfreeze-thaw", None)


def test_fstrim_unwraps_the_paths() -> None:
    reply = {
        "paths": [
            {"path": "/", "trimmed": 123456, "minimum": 4096, "discarded-ranges": 7},
            {"path": "/boot", "error": "Operation not supported"},
        ],
        "elapsed-ms": 12,
    }
    agent, transport = fake_agent({"guest-fstrim": reply})
    results = agent.fstrim(minimum=4096)
    assert_type(results, list[FstrimResult])
    assert sent(transport) == ("guest-fstrim", {"minimum": 4096})
    assert [r.path for r in results] == ["/", "/boot"]
    assert results[0].trimmed == 123456
    assert results[0].extras == {"discarded-ranges": 7}
    assert results[1].trimmed is None
    assert results[1].error == "Operation not supported"
    agent.fstrim()
    assert sent(transport) == ("guest-fstrim", None)


def test_file_arguments_carry_bytes_as_base64() -> None:
    data = bytes(range(256))
    agent, transport = fake_agent(
        {
            "guest-file-write": {"count": 256, "eof": False},
            "guest-file-seek": {"position": 10, "eof": False},
            "guest-file-open": 1000,
        }
    )
    assert agent.file_open("/etc/x") == 1000
    assert sent(transport) == ("guest-file-open", {"path": "/etc/x"})
    agent.file_open("/etc/x", "a+")
    assert sent(transport) == ("guest-file-open", {"path": "/etc/x", "mode": "a+"})
    assert agent.file_write(1000, data).count == 256
    assert sent(transport) == (
        "guest-file-write",
        {"handle": 1000, "buf-b64": base64.b64encode(data).decode()},
    )
    agent.file_write(1000, data, count=5)
    assert sent(transport)[1]["count"] == 5
    assert agent.file_seek(1000, 10).position == 10
    assert sent(transport) == ("guest-file-seek", {"handle": 1000, "offset": 10, "whence": "set"})
    agent.file_seek(1000, -1, SeekWhence.END)
    assert sent(transport)[1]["whence"] == "end"
    agent.file_seek(1000, 0, 1)
    assert sent(transport)[1]["whence"] == 1


def test_exec_arguments() -> None:
    agent, transport = fake_agent({"guest-exec": {"pid": 4242, "future": True}})
    pid = agent.exec(
        "/bin/sh",
        ("-c", "cat"),
        env={"A": "1", "B": "x=y"},
        input=b"\x00\xff",
        capture_output=True,
    )
    assert_type(pid, int)
    assert pid == 4242
    assert sent(transport) == (
        "guest-exec",
        {
            "path": "/bin/sh",
            "arg": ["-c", "cat"],
            "env": ["A=1", "B=x=y"],
            "input-data": "AP8=",
            "capture-output": True,
        },
    )
    agent.exec("/bin/true")
    assert sent(transport) == ("guest-exec", {"path": "/bin/true"})
    agent.exec("/bin/true", capture_output=CaptureOutputMode.MERGED)
    assert sent(transport)[1]["capture-output"] == "merged"


def test_ssh_key_arguments() -> None:
    agent, transport = fake_agent(
        {
            "guest-ssh-add-authorized-keys": {},
            "guest-ssh-remove-authorized-keys": {},
            "guest-ssh-get-authorized-keys": {"keys": ["ssh-ed25519 AAAA a"]},
        }
    )
    agent.ssh_add_authorized_keys("alice", ("ssh-ed25519 AAAA a",))
    assert sent(transport) == (
        "guest-ssh-add-authorized-keys",
        {"username": "alice", "keys": ["ssh-ed25519 AAAA a"]},
    )
    agent.ssh_add_authorized_keys("alice", ["k"], reset=True)
    assert sent(transport)[1] == {"username": "alice", "keys": ["k"], "reset": True}
    agent.ssh_remove_authorized_keys("alice", ["k"])
    assert sent(transport) == (
        "guest-ssh-remove-authorized-keys",
        {"username": "alice", "keys": ["k"]},
    )
    keys = agent.ssh_get_authorized_keys("alice")
    assert_type(keys, list[str])
    assert keys == ["ssh-ed25519 AAAA a"]


# --- replies ---------------------------------------------------------------------------


def test_get_load() -> None:
    agent, transport = fake_agent(
        {"guest-get-load": {"load1m": 0.5, "load5m": 0.25, "load15m": 1, "load30m": 0.1}}
    )
    load = agent.get_load()
    assert_type(load, LoadAverage)
    assert sent(transport) == ("guest-get-load", None)
    assert (load.load1m, load.load5m, load.load15m) == (0.5, 0.25, 1.0)
    assert load.extras == {"load30m": 0.1}


def test_network_get_route() -> None:
    reply = [
        {
            "iface": "eth0",
            "destination": "00000000",
            "gateway": "0102A8C0",
            "mask": "00000000",
            "metric": 100,
            "flags": 3,
            "refcnt": 0,
            "use": 0,
            "irtt": 0,
            "window": 0,
            "mtu": 0,
            "version": 4,
        },
        {
            "iface": "eth0",
            "destination": "fe800000000000000000000000000000",
            "desprefixlen": "40",
            "source": "00000000000000000000000000000000",
            "srcprefixlen": "00",
            "nexthop": "00000000000000000000000000000000",
            "metric": 256,
            "version": 6,
            "protocol": "kernel",
        },
    ]
    agent, transport = fake_agent({"guest-network-get-route": reply})
    routes = agent.network_get_route()
    assert_type(routes, list[NetworkRoute])
    assert sent(transport) == ("guest-network-get-route", None)
    v4, v6 = routes
    assert (v4.version, v4.gateway, v4.metric, v4.flags) == (4, "0102A8C0", 100, 3)
    assert v4.desprefixlen is None
    assert (v6.version, v6.desprefixlen, v6.nexthop) == (6, "40", "0" * 32)
    assert v6.gateway is None
    assert v6.mtu is None
    assert v6.extras == {"protocol": "kernel"}


def test_get_devices_with_known_and_unknown_id_types() -> None:
    reply = [
        {
            "driver-name": "VirtIO Serial Driver",
            "driver-date": 1_600_000_000_000_000_000,
            "driver-version": "100.85.104.20800",
            "id": {"type": "pci", "vendor-id": 0x1AF4, "device-id": 0x1043},
        },
        {"driver-name": "USB hub", "id": {"type": "usb", "vid": 1, "pid": 2}},
        {"driver-name": "Unknown", "signed": True},
    ]
    agent, _ = fake_agent({"guest-get-devices": reply})
    devices = agent.get_devices()
    assert_type(devices, list[DeviceInfo])
    pci, usb, bare = devices
    assert isinstance(pci.id, PciDeviceId)
    assert (pci.id.vendor_id, pci.id.device_id) == (0x1AF4, 0x1043)
    assert pci.id.type is DeviceType.PCI
    assert isinstance(usb.id, OtherDeviceId)
    assert usb.id.type == "usb"
    assert not usb.id.type.known
    assert usb.id.extras == {"vid": 1, "pid": 2}
    assert bare.id is None
    assert bare.driver_date is None
    assert bare.extras == {"signed": True}


def test_cpustats_of_an_unknown_kind_are_kept() -> None:
    reply = [
        {"type": "linux", "cpu": 0, "user": 1, "nice": 2, "system": 3, "idle": 4, "iowait": 5},
        {"type": "windows", "cpu": 1, "kernel-time": 9},
    ]
    agent, _ = fake_agent({"guest-get-cpustats": reply})
    linux, other = agent.get_cpustats()
    assert isinstance(linux, LinuxCpuStats)
    assert (linux.user, linux.idle, linux.iowait, linux.steal) == (1, 4, 5, None)
    assert linux.type is CpuStatsType.LINUX
    assert isinstance(other, OtherCpuStats)
    assert other.type == "windows"
    assert other.extras == {"cpu": 1, "kernel-time": 9}


def test_disks_with_smart_data_and_a_new_bus_type() -> None:
    smart = {f: 1 for f in NvmeSmart.model_fields if f != "type"}
    nvme_smart = {key.replace("_", "-"): value for key, value in smart.items()}
    address = {
        "pci-controller": {"domain": 0, "bus": 0, "slot": 4, "function": 0},
        "bus-type": "nvme",
        "bus": 0,
        "target": 0,
        "unit": 0,
        "serial": "S123",
    }
    reply = [
        {
            "name": "/dev/nvme0n1",
            "partition": False,
            "address": address,
            "smart": {"type": "nvme", **nvme_smart},
        },
        {
            "name": "/dev/sda",
            "partition": False,
            "dependencies": [],
            "address": {**address, "bus-type": "cxl", "slot": -1},
            "smart": {"type": "scsi", "health": "ok"},
            "rotational": False,
        },
        {"name": "/dev/dm-0", "partition": True, "dependencies": ["/dev/sda"], "alias": "root"},
    ]
    agent, _ = fake_agent({"guest-get-disks": reply})
    disks = agent.get_disks()
    assert_type(disks, list[DiskInfo])
    nvme, sda, dm = disks
    assert nvme.address is not None
    assert nvme.address.bus_type is DiskBusType.NVME
    assert nvme.address.pci_controller.slot == 4
    assert nvme.address.dev is None
    assert nvme.dependencies is None
    assert isinstance(nvme.smart, NvmeSmart)
    assert nvme.smart.number_of_error_log_entries_hi == 1
    assert sda.address is not None
    assert sda.address.bus_type == "cxl"
    assert not sda.address.bus_type.known
    assert isinstance(sda.smart, OtherDiskSmart)
    assert sda.smart.extras == {"health": "ok"}
    assert sda.extras == {"rotational": False}
    assert (dm.alias, dm.address, dm.smart, dm.dependencies) == ("root", None, None, ["/dev/sda"])


def test_every_disk_bus_type_of_the_schema_is_known() -> None:
    assert len(DiskBusType) == 20
    assert DiskBusType("file-backed-virtual") is DiskBusType.FILE_BACKED_VIRTUAL
    assert all(member.known for member in DiskBusType)


def test_open_enums_keep_new_values_and_stay_typed() -> None:
    agent, _ = fake_agent(lambda request: "thawing")
    status = agent.fsfreeze_status()
    assert_type(status, FsfreezeStatus)
    assert isinstance(status, FsfreezeStatus)
    assert status == "thawing"
    assert status != FsfreezeStatus.THAWED
    assert not status.known
    assert FsfreezeStatus("frozen") is FsfreezeStatus.FROZEN
    assert FsfreezeStatus.FROZEN.known
    assert IpAddressType("ipv8") == "ipv8"


def test_exec_status_decodes_output() -> None:
    reply = {
        "exited": True,
        "exitcode": 0,
        "out-data": base64.b64encode(b"\x00bin\xff").decode(),
        "err-data": "",
        "out-truncated": False,
        "err-truncated": True,
        "cpu-ms": 3,
    }
    agent, transport = fake_agent({"guest-exec-status": reply})
    status = agent.exec_status(4242)
    assert_type(status, ExecStatus)
    assert sent(transport) == ("guest-exec-status", {"pid": 4242})
    assert status.out_data == b"\x00bin\xff"
    assert status.err_data == b""
    assert (status.exitcode, status.signal, status.err_truncated) == (0, None, True)
    assert status.extras == {"cpu-ms": 3}

    running, _ = fake_agent({"guest-exec-status": {"exited": False}})
    assert running.exec_status(1) == ExecStatus(exited=False)


def test_file_read_decodes_the_buffer() -> None:
    agent, _ = fake_agent({"guest-file-read": {"count": 3, "buf-b64": "AAEC", "eof": True}})
    read = agent.file_read(1000, 3)
    assert_type(read, FileRead)
    assert (read.count, read.data, read.eof) == (3, b"\x00\x01\x02", True)
    assert read.model_dump(by_alias=True, mode="json")["buf-b64"] == "AAEC"


def test_the_typed_methods_give_the_declared_types() -> None:
    agent, _ = fake_agent(
        {
            "guest-network-get-interfaces": [
                {
                    "name": "eth0",
                    "ip-addresses": [
                        {"ip-address": "10.0.0.2", "ip-address-type": "ipv4", "prefix": 24}
                    ],
                }
            ],
            "guest-get-memory-block-info": {"size": 134217728},
            "guest-get-host-name": {"host-name": "vm1"},
            "guest-set-memory-blocks": [],
        }
    )
    interfaces = agent.network_get_interfaces()
    assert_type(interfaces, list[NetworkInterface])
    assert interfaces[0].ip_addresses is not None
    assert interfaces[0].ip_addresses[0].ip_address_type is IpAddressType.IPV4
    assert interfaces[0].statistics is None
    assert interfaces[0].hardware_address is None
    size = agent.get_memory_block_info()
    assert_type(size, int)
    assert size == 134217728
    name = agent.get_host_name()
    assert_type(name, str)
    assert name == "vm1"
    assert_type(agent.set_memory_blocks([]), list[MemoryBlockResponse])


@pytest.mark.parametrize(
    ("method", "args", "reply"),
    [
        ("get_load", (), {"load1m": "high", "load5m": 0, "load15m": 0}),
        ("get_load", (), [0.1, 0.2, 0.3]),
        ("exec", ("/bin/true",), {"process": 12}),
        ("exec", ("/bin/true",), 12),
        ("get_host_name", (), "vm1"),
        ("file_read", (1000,), {"count": 1, "buf-b64": "not base64!", "eof": True}),
        ("fsfreeze_status", (), 1),
        ("get_cpustats", (), [{"type": "linux", "cpu": 0}]),
        ("set_memory_blocks", ([],), [{"phys-index": 1}]),
        ("fstrim", (), {}),
    ],
)
def test_a_reply_that_breaks_the_schema_is_a_protocol_error(
    method: str, args: tuple[Any, ...], reply: Any
) -> None:
    agent, transport = fake_agent(lambda request: reply)
    with pytest.raises(ProtocolError) as error:
        getattr(agent, method)(*args)
    assert error.value.reply == reply
    assert error.value.command == transport.requests[-1].command
    assert transport.requests[-1].command in str(error.value)


# --- capabilities and refusals ----------------------------------------------------------


def _info(*disabled: str) -> dict[str, Any]:
    commands = [
        {"name": wire, "enabled": wire not in disabled, "success-response": wire not in NO_REPLY}
        for wire in ("guest-ping", "guest-info", "guest-get-osinfo", "guest-shutdown")
    ]
    return {"version": "9.9.9", "supported_commands": commands}


def test_supports_asks_guest_info_once() -> None:
    agent, transport = fake_agent({"guest-info": _info("guest-shutdown")})
    assert agent.supports("guest-get-osinfo")
    assert agent.supports("get_osinfo")
    assert agent.supports(Commands.ping)
    assert not agent.supports("guest-shutdown")
    assert not agent.supports(Commands.shutdown)
    assert not agent.supports("get_load")
    assert not agent.supports("guest-nosuch")
    assert [r.command for r in transport.requests] == ["guest-info"]
    assert agent.capabilities().version == "9.9.9"
    assert agent.with_timeout(1).supports("ping")
    assert len(transport.requests) == 1
    agent.capabilities(refresh=True)
    assert len(transport.requests) == 2


def test_capabilities_reuses_an_earlier_info() -> None:
    agent, transport = fake_agent({"guest-info": _info()})
    info = agent.info()
    assert agent.capabilities() is info
    assert len(transport.requests) == 1


def _refusing(desc: str, status: str) -> Callable[[Request], Any]:
    def handler(request: Request) -> Any:
        if request.command == "guest-fsfreeze-status":
            return status
        if request.command == "guest-info":
            return _info()
        return Reply(error_class="CommandNotFound", desc=desc)

    return handler


def test_a_disabled_command_is_a_freeze_when_the_guest_is_frozen() -> None:
    agent, transport = fake_agent(_refusing("Command guest-get-osinfo has been disabled", "frozen"))
    with pytest.raises(GuestFrozenError) as error:
        agent.get_osinfo()
    assert "thaw" in str(error.value)
    assert "9.9.9" in str(error.value)
    assert "guest-fsfreeze-status" in [r.command for r in transport.requests]


def test_a_disabled_command_is_not_a_freeze_when_thawed() -> None:
    agent, _ = fake_agent(_refusing("Command guest-get-osinfo has been disabled", "thawed"))
    with pytest.raises(CommandDisabledError) as error:
        agent.get_osinfo()
    assert not isinstance(error.value, GuestFrozenError)
    assert "--block-rpcs" in str(error.value)


def test_a_disabled_frozen_safe_command_does_not_ask_for_the_freeze() -> None:
    agent, transport = fake_agent(_refusing("Command guest-ping has been disabled", "frozen"))
    with pytest.raises(CommandDisabledError) as error:
        agent.ping()
    assert not isinstance(error.value, GuestFrozenError)
    assert "guest-fsfreeze-status" not in [r.command for r in transport.requests]
