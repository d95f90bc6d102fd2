"""The wire's enumerations: plain Python, importable without pydantic.

Kept apart from :mod:`qga_libvirt.models` (which re-exports every one of them) so that
what needs only an enum (a seek position, a shutdown mode, the freeze state) does not
import pydantic and the models: ``import qga_libvirt`` and a ping stay quick.

The enums of replies are :class:`OpenEnum`: a value a newer agent adds becomes a member
made on the fly rather than an error.
"""

from __future__ import annotations

import enum
from typing import Self

__all__ = [
    "CaptureOutputMode",
    "CpuStatsType",
    "DeviceType",
    "DiskBusType",
    "FsfreezeStatus",
    "IpAddressType",
    "MemoryBlockResponseType",
    "OpenEnum",
    "SeekWhence",
    "ShutdownMode",
]


class OpenEnum(enum.StrEnum):
    """A string enum that also holds the values a newer agent adds.

    ``DiskBusType("cxl")`` is not an error: it makes a member on the fly, an instance of
    the enum equal to its string, whose :attr:`known` is False. Comparisons with the
    declared members and with plain strings work as usual.
    """

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """Whether this version of the library declares the value."""
        return self._value_ in type(self)._value2member_map_


class ShutdownMode(enum.StrEnum):
    """How guest-shutdown stops the guest."""

    HALT = "halt"
    POWERDOWN = "powerdown"
    REBOOT = "reboot"


class SeekWhence(enum.StrEnum):
    """What a guest-file-seek offset is relative to (the wire also takes 0, 1, 2)."""

    SET = "set"
    CUR = "cur"
    END = "end"


class FsfreezeStatus(OpenEnum):
    """Whether the guest's filesystems are frozen (guest-fsfreeze-status)."""

    THAWED = "thawed"
    FROZEN = "frozen"


class DiskBusType(OpenEnum):
    """The bus a disk hangs on."""

    IDE = "ide"
    FDC = "fdc"
    SCSI = "scsi"
    VIRTIO = "virtio"
    XEN = "xen"
    USB = "usb"
    UML = "uml"
    SATA = "sata"
    SD = "sd"
    UNKNOWN = "unknown"
    IEEE1394 = "ieee1394"
    SSA = "ssa"
    FIBRE = "fibre"
    RAID = "raid"
    ISCSI = "iscsi"
    SAS = "sas"
    MMC = "mmc"
    VIRTUAL = "virtual"
    FILE_BACKED_VIRTUAL = "file-backed-virtual"
    NVME = "nvme"


class CaptureOutputMode(enum.StrEnum):
    """Which output guest-exec captures (modes need agent 8.0; ``True`` means separated)."""

    NONE = "none"
    STDOUT = "stdout"
    STDERR = "stderr"
    SEPARATED = "separated"
    MERGED = "merged"


class CpuStatsType(OpenEnum):
    """The kind of CPU statistics: which operating system they come from."""

    LINUX = "linux"


class DeviceType(OpenEnum):
    """The kind of a device id."""

    PCI = "pci"


class IpAddressType(OpenEnum):
    """An IP version."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"


class MemoryBlockResponseType(OpenEnum):
    """How setting one memory block went."""

    SUCCESS = "success"
    NOT_FOUND = "not-found"
    OPERATION_NOT_SUPPORTED = "operation-not-supported"
    OPERATION_FAILED = "operation-failed"
