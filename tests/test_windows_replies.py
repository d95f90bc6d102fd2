"""Windows-shaped replies parse without losing a field.

Where a recorded reply is public it is used as published: guest-get-osinfo and
guest-get-users from libvirt's tests/qemuagenttest.c, guest-get-devices as KubeVirt's
documentation quotes a Windows agent. The guest-get-fsinfo and guest-get-disks replies
follow qemu-ga's Windows implementation (qga/commands-win32.c: volume GUID paths as
names, drive letters as mount points, NTFS, physical drives), without the fields only
the Linux agent sends.
"""

from __future__ import annotations

from typing import Any

import pytest

from qga_libvirt import CommandNotFoundError, FakeTransport, GuestAgent, Reply, Request
from qga_libvirt.commands import Commands
from qga_libvirt.models import DiskBusType, PciDeviceId

# libvirt tests/qemuagenttest.c, testQemuAgentOSInfoResponse2
WINDOWS_OSINFO = {
    "name": "Microsoft Windows",
    "kernel-release": "7601",
    "version": "Microsoft Windows 77",
    "variant": "client",
    "pretty-name": "Windows 7 Professional",
    "version-id": "",
    "variant-id": "client",
    "kernel-version": "6.1",
    "machine": "x86_64",
    "id": "mswindows",
}

# libvirt tests/qemuagenttest.c, testQemuAgentUsersResponse2: Windows users have a domain
WINDOWS_USERS = [{"user": "test", "domain": "DOMAIN", "login-time": 1561739203.584038}]

# A Windows agent's guest-get-devices, as KubeVirt's documentation quotes it
WINDOWS_DEVICES = [
    {
        "driver-date": 1721001600000000000,
        "driver-name": "Red Hat VirtIO Ethernet Adapter",
        "driver-version": "100.95.104.26200",
        "id": {"device-id": 4161, "vendor-id": 6900, "type": "pci"},
    }
]

WINDOWS_FSINFO = [
    {
        "name": "\\\\?\\Volume{5f0f3a4b-0000-0000-0000-100000000000}\\",
        "mountpoint": "C:\\",
        "type": "NTFS",
        "total-bytes": 42947571712,
        "used-bytes": 16143794176,
        "disk": [
            {
                "pci-controller": {"domain": 0, "bus": 0, "slot": 5, "function": 0},
                "bus-type": "sata",
                "bus": 0,
                "target": 0,
                "unit": 0,
                "serial": "QM00001",
                "dev": "\\\\.\\PhysicalDrive0",
            }
        ],
    },
    {  # a volume without a drive letter: no mount point the agent can name, no disk
        "name": "\\\\?\\Volume{5f0f3a4b-0000-0000-0000-200000000000}\\",
        "mountpoint": "",
        "type": "NTFS",
        "disk": [],
    },
]

WINDOWS_DISKS = [
    {
        "name": "\\\\.\\PhysicalDrive0",
        "partition": False,
        "address": WINDOWS_FSINFO[0]["disk"][0],  # type: ignore[index]
    }
]


def agent_answering(replies: dict[str, Any]) -> GuestAgent:
    return GuestAgent(FakeTransport(lambda request: replies[request.command]))


def test_windows_osinfo_and_users() -> None:
    agent = agent_answering({"guest-get-osinfo": WINDOWS_OSINFO, "guest-get-users": WINDOWS_USERS})
    info = agent.get_osinfo()
    assert (info.id, info.pretty_name, info.kernel_release) == (
        "mswindows",
        "Windows 7 Professional",
        "7601",
    )
    assert info.version_id == ""
    assert info.model_dump(by_alias=True, exclude_none=True) == WINDOWS_OSINFO
    [user] = agent.get_users()
    assert (user.user, user.domain) == ("test", "DOMAIN")


def test_windows_devices_with_driver_info() -> None:
    [device] = Commands.get_devices.parse(WINDOWS_DEVICES)
    assert device.driver_name == "Red Hat VirtIO Ethernet Adapter"
    assert device.driver_version == "100.95.104.26200"
    assert device.driver_date == 1721001600000000000
    assert isinstance(device.id, PciDeviceId)
    assert (device.id.vendor_id, device.id.device_id) == (0x1AF4, 0x1041)


def test_windows_fsinfo_without_the_linux_fields() -> None:
    volumes = Commands.get_fsinfo.parse(WINDOWS_FSINFO)
    c, hidden = volumes
    assert c.name.startswith("\\\\?\\Volume{")
    assert (c.mountpoint, c.type) == ("C:\\", "NTFS")
    assert c.total_bytes_privileged is None  # Linux only
    assert c.disk[0].bus_type is DiskBusType.SATA
    assert c.disk[0].dev == "\\\\.\\PhysicalDrive0"
    assert (hidden.mountpoint, hidden.disk, hidden.used_bytes) == ("", [], None)
    for parsed, sent in zip(volumes, WINDOWS_FSINFO, strict=True):
        assert parsed.model_dump(by_alias=True, exclude_none=True, mode="json") == sent


def test_windows_disks() -> None:
    [disk] = Commands.get_disks.parse(WINDOWS_DISKS)
    assert disk.name == "\\\\.\\PhysicalDrive0"
    assert not disk.partition
    assert disk.dependencies is None
    assert disk.address is not None
    assert disk.address.serial == "QM00001"


def test_a_windows_guest_is_recognised_for_messages() -> None:
    def answer(request: Request) -> Any:
        if request.command == "guest-get-osinfo":
            return WINDOWS_OSINFO
        if request.command == "guest-info":
            return {"version": "9.2.0", "supported_commands": []}
        return Reply(
            error_class="CommandNotFound",
            desc=f"The command {request.command} has not been found",
        )

    agent = GuestAgent(FakeTransport(answer))
    with pytest.raises(CommandNotFoundError) as caught:
        agent.get_diskstats()
    assert "exists only on Linux guests; this guest runs Windows" in str(caught.value)
