"""Typed replies. Field names are snake_case; the wire's kebab-case names are aliases.

Every model keeps the fields a newer agent adds that this version does not know:
they stay reachable in :attr:`Model.extras` (and ``model_extra``), never dropped, never
an error. Optional fields the agent left out are None.

The same tolerance holds for values: the enums of replies are :class:`OpenEnum`, so a
value a newer agent adds (a bus type, a response type) becomes a member made on the fly
rather than an error; the tagged unions of the schema (CPU stats, disk SMART data,
device ids) fall back to an ``Other*`` model, with everything in its extras, for a tag
this version does not know.

Bytes are bytes: the agent's base64 fields are :data:`Base64Bytes`, decoded here and
nowhere else.

The enums live in :mod:`qga_libvirt.enums` (plain Python, no pydantic) and are
re-exported here; so are the results of ``run()`` (:class:`RunResult`,
:class:`RunHandle`). Importing this module imports pydantic (~100 ms): the rest of the
library imports it when a reply is parsed, not before.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    model_validator,
)

from .enums import (
    CaptureOutputMode,
    CpuStatsType,
    DeviceType,
    DiskBusType,
    FsfreezeStatus,
    IpAddressType,
    MemoryBlockResponseType,
    OpenEnum,
    SeekWhence,
    ShutdownMode,
)

__all__ = [
    "EXEC_OUTPUT_LIMIT",
    "AgentInfo",
    "Base64Bytes",
    "CaptureOutputMode",
    "CcwAddress",
    "CommandInfo",
    "CpuStats",
    "CpuStatsType",
    "DeviceId",
    "DeviceInfo",
    "DeviceType",
    "DiskAddress",
    "DiskBusType",
    "DiskInfo",
    "DiskSmart",
    "DiskStats",
    "DiskStatsInfo",
    "ExecStatus",
    "FileRead",
    "FileSeek",
    "FileWrite",
    "FilesystemInfo",
    "FsfreezeStatus",
    "FstrimResult",
    "IpAddress",
    "IpAddressType",
    "LinuxCpuStats",
    "LoadAverage",
    "LogicalProcessor",
    "MemoryBlock",
    "MemoryBlockResponse",
    "MemoryBlockResponseType",
    "Model",
    "NetworkInterface",
    "NetworkInterfaceStats",
    "NetworkRoute",
    "NvmeSmart",
    "OpenEnum",
    "OsInfo",
    "OtherCpuStats",
    "OtherDeviceId",
    "OtherDiskSmart",
    "PciAddress",
    "PciDeviceId",
    "RunHandle",
    "RunResult",
    "SeekWhence",
    "ShutdownMode",
    "Timezone",
    "User",
    "encode_base64",
]


def _wire_name(field: str) -> str:
    return field.replace("_", "-")


class Model(BaseModel):
    """Base of every reply model: frozen, wire aliases, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        alias_generator=_wire_name,
        validate_by_name=True,
        validate_by_alias=True,
        # Schemas are built on first use, not at import: a process that never parses a
        # given reply (most CLI calls parse one) does not pay for its model.
        defer_build=True,
    )

    @property
    def extras(self) -> dict[str, Any]:
        """Fields the agent sent that this model does not declare (a newer agent's)."""
        return dict(self.model_extra or {})


# --- values ---------------------------------------------------------------------------


def encode_base64(data: bytes) -> str:
    """Bytes as the agent's base64 text."""
    return base64.b64encode(data).decode("ascii")


def _decode_base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64 ({exc})") from None
    return value


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_decode_base64),
    PlainSerializer(encode_base64, return_type=str, when_used="json"),
]
"""Bytes that travel as base64 text: decoded when read, encoded when dumped to JSON."""


def _by_tag(field: str, *known: str) -> Discriminator:
    """Pick a tagged union's member by ``field``; a tag not in ``known`` picks "other"."""

    def pick(value: Any) -> str:
        tag = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        return str(tag) if tag in known else "other"

    return Discriminator(pick)


# --- the agent ------------------------------------------------------------------------


class CommandInfo(Model):
    """One command the agent knows."""

    name: str
    enabled: bool
    success_response: bool


class AgentInfo(Model):
    """The agent's version and every command it knows (guest-info)."""

    version: str
    supported_commands: list[CommandInfo] = Field(alias="supported_commands")

    def command(self, name: str) -> CommandInfo | None:
        """The entry for a wire name, or None when this agent does not know it."""
        for info in self.supported_commands:
            if info.name == name:
                return info
        return None


# --- files ----------------------------------------------------------------------------


class FileRead(Model):
    """What guest-file-read read: ``data`` is decoded from the wire's ``buf-b64``."""

    count: int
    data: Base64Bytes = Field(alias="buf-b64")
    eof: bool


class FileWrite(Model):
    """What guest-file-write wrote."""

    count: int
    eof: bool


class FileSeek(Model):
    """The file position after guest-file-seek."""

    position: int
    eof: bool


# --- filesystems and disks ------------------------------------------------------------


class FstrimResult(Model):
    """What guest-fstrim did for one mount point; ``error`` says why it failed."""

    path: str
    trimmed: int | None = None
    minimum: int | None = None
    error: str | None = None


class PciAddress(Model):
    """A PCI address (fields are -1 when the agent could not tell)."""

    domain: int
    bus: int
    slot: int
    function: int


class CcwAddress(Model):
    """A CCW address, on s390x."""

    cssid: int
    ssid: int
    subchno: int
    devno: int


class DiskAddress(Model):
    """Where a disk is attached: controller, bus type, bus/target/unit."""

    pci_controller: PciAddress
    bus_type: DiskBusType
    bus: int
    target: int
    unit: int
    serial: str | None = None
    dev: str | None = None
    ccw_address: CcwAddress | None = None


class NvmeSmart(Model):
    """SMART / health information of an NVMe disk."""

    type: DiskBusType
    critical_warning: int
    temperature: int
    available_spare: int
    available_spare_threshold: int
    percentage_used: int
    data_units_read_lo: int
    data_units_read_hi: int
    data_units_written_lo: int
    data_units_written_hi: int
    host_read_commands_lo: int
    host_read_commands_hi: int
    host_write_commands_lo: int
    host_write_commands_hi: int
    controller_busy_time_lo: int
    controller_busy_time_hi: int
    power_cycles_lo: int
    power_cycles_hi: int
    power_on_hours_lo: int
    power_on_hours_hi: int
    unsafe_shutdowns_lo: int
    unsafe_shutdowns_hi: int
    media_errors_lo: int
    media_errors_hi: int
    number_of_error_log_entries_lo: int
    number_of_error_log_entries_hi: int


class OtherDiskSmart(Model):
    """SMART data of a bus type without a model here: whatever was sent is in extras."""

    type: DiskBusType


DiskSmart = Annotated[
    Annotated[NvmeSmart, Tag("nvme")] | Annotated[OtherDiskSmart, Tag("other")],
    _by_tag("type", "nvme"),
]
"""A disk's SMART data, by bus type."""


class DiskInfo(Model):
    """One disk or partition (guest-get-disks)."""

    name: str
    partition: bool
    dependencies: list[str] | None = None
    address: DiskAddress | None = None
    alias: str | None = None
    smart: DiskSmart | None = None


class FilesystemInfo(Model):
    """One mounted filesystem and the disks it lies on (guest-get-fsinfo)."""

    name: str
    mountpoint: str
    type: str
    used_bytes: int | None = None
    total_bytes: int | None = None
    total_bytes_privileged: int | None = None
    disk: list[DiskAddress]


class DiskStats(Model):
    """I/O counters of one disk; each is None when the guest kernel does not have it."""

    read_sectors: int | None = None
    read_ios: int | None = None
    read_merges: int | None = None
    write_sectors: int | None = None
    write_ios: int | None = None
    write_merges: int | None = None
    discard_sectors: int | None = None
    discard_ios: int | None = None
    discard_merges: int | None = None
    flush_ios: int | None = None
    read_ticks: int | None = None
    write_ticks: int | None = None
    discard_ticks: int | None = None
    flush_ticks: int | None = None
    ios_pgr: int | None = None
    total_ticks: int | None = None
    weight_ticks: int | None = None


class DiskStatsInfo(Model):
    """One disk's device numbers and I/O counters (guest-get-diskstats)."""

    name: str
    major: int
    minor: int
    stats: DiskStats


# --- processes ------------------------------------------------------------------------

EXEC_OUTPUT_LIMIT = 16 << 20
"""Bytes the agent keeps per captured stream; past it the stream is cut."""


class ExecStatus(Model):
    """A guest-exec process: running, or exited with its code or signal and its output.

    ``out_data``/``err_data`` are the captured bytes, None when output was not captured
    or the process is still running. ``out_truncated``/``err_truncated`` say whether a
    captured stream was cut at :data:`EXEC_OUTPUT_LIMIT`, the same whichever the agent's
    generation (10.0 leaves them out when false, and says false for a stream it cut).
    """

    exited: bool
    exitcode: int | None = None
    signal: int | None = None
    out_data: Base64Bytes | None = None
    err_data: Base64Bytes | None = None
    out_truncated: bool | None = None
    err_truncated: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _truncated_as_it_is(cls, data: Any) -> Any:
        # 10.0 leaves the flags out when false; it also says false after cutting a
        # stream at the limit (measured with 10.0.2: 17,000,000 bytes written, 16 MiB
        # and out-truncated false returned). 7.2 says both right.
        if not isinstance(data, dict):
            return data
        fixed = dict(data)
        for stream in ("out", "err"):
            captured = fixed.get(f"{stream}-data")
            if not isinstance(captured, str) or f"{stream}_truncated" in fixed:
                continue
            full = len(captured) * 3 // 4 - captured[-2:].count("=") >= EXEC_OUTPUT_LIMIT
            fixed[f"{stream}-truncated"] = bool(fixed.get(f"{stream}-truncated")) or full
        return fixed


# --- the system -----------------------------------------------------------------------


class OsInfo(Model):
    """The guest's operating system: uname fields and os-release(5) fields."""

    kernel_release: str | None = None
    kernel_version: str | None = None
    machine: str | None = None
    id: str | None = None
    name: str | None = None
    pretty_name: str | None = None
    version: str | None = None
    version_id: str | None = None
    variant: str | None = None
    variant_id: str | None = None


class User(Model):
    """A logged-in user; ``login_time`` is seconds since the epoch (earliest login)."""

    user: str
    login_time: float
    domain: str | None = None


class Timezone(Model):
    """The guest's timezone: ``offset`` is seconds east of UTC."""

    zone: str | None = None
    offset: int


class LoadAverage(Model):
    """The guest's load averages."""

    load1m: float
    load5m: float
    load15m: float


class LinuxCpuStats(Model):
    """One Linux CPU's times, in milliseconds; the newer counters may be None."""

    type: CpuStatsType
    cpu: int
    user: int
    nice: int
    system: int
    idle: int
    iowait: int | None = None
    irq: int | None = None
    softirq: int | None = None
    steal: int | None = None
    guest: int | None = None
    guestnice: int | None = None


class OtherCpuStats(Model):
    """CPU statistics of a kind without a model here: whatever was sent is in extras."""

    type: CpuStatsType


CpuStats = Annotated[
    Annotated[LinuxCpuStats, Tag("linux")] | Annotated[OtherCpuStats, Tag("other")],
    _by_tag("type", "linux"),
]
"""One CPU's statistics, by operating system."""


class PciDeviceId(Model):
    """A PCI device's vendor and device ids."""

    type: DeviceType
    vendor_id: int
    device_id: int


class OtherDeviceId(Model):
    """A device id of a kind without a model here: whatever was sent is in extras."""

    type: DeviceType


DeviceId = Annotated[
    Annotated[PciDeviceId, Tag("pci")] | Annotated[OtherDeviceId, Tag("other")],
    _by_tag("type", "pci"),
]
"""A device's id, by device type."""


class DeviceInfo(Model):
    """A device and its driver (guest-get-devices); ``driver_date`` is ns since the epoch."""

    driver_name: str
    driver_date: int | None = None
    driver_version: str | None = None
    id: DeviceId | None = None


# --- network --------------------------------------------------------------------------


class IpAddress(Model):
    """An address of an interface."""

    ip_address: str
    ip_address_type: IpAddressType
    prefix: int


class NetworkInterfaceStats(Model):
    """An interface's traffic counters."""

    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_dropped: int


class NetworkInterface(Model):
    """One network interface: name, MAC, addresses, counters."""

    name: str
    hardware_address: str | None = None
    ip_addresses: list[IpAddress] | None = None
    statistics: NetworkInterfaceStats | None = None


class NetworkRoute(Model):
    """One route of the guest's routing table; ``version`` is 4 or 6."""

    iface: str
    destination: str
    metric: int
    version: int
    gateway: str | None = None
    mask: str | None = None
    irtt: int | None = None
    flags: int | None = None
    refcnt: int | None = None
    use: int | None = None
    window: int | None = None
    mtu: int | None = None
    desprefixlen: str | None = None
    source: str | None = None
    srcprefixlen: str | None = None
    nexthop: str | None = None


# --- virtual hardware -----------------------------------------------------------------


class LogicalProcessor(Model):
    """A vCPU: read from guest-get-vcpus, or a wanted state for guest-set-vcpus."""

    logical_id: int
    online: bool
    can_offline: bool | None = None


class MemoryBlock(Model):
    """A memory block: read from guest-get-memory-blocks, or a wanted state to set."""

    phys_index: int
    online: bool
    can_offline: bool | None = None


class MemoryBlockResponse(Model):
    """The result for one block of guest-set-memory-blocks; ``error_code`` is an errno."""

    phys_index: int
    response: MemoryBlockResponseType
    error_code: int | None = None


# --- run() ----------------------------------------------------------------------------


class RunResult(BaseModel):
    """A finished guest process: how it ended and what it wrote.

    ``stdout``/``stderr`` are bytes (empty when not captured; base64 in JSON dumps);
    :meth:`stdout_text` decodes them (Windows guests: pass their code page, e.g.
    ``"cp850"`` or ``"utf-16-le"``). ``exitcode`` is None when a signal (``signal``)
    ended the process. ``duration`` is seconds from the start to the status that showed
    the exit, so it is precise to the polling interval.
    """

    model_config = ConfigDict(frozen=True)

    argv: tuple[str, ...]
    pid: int
    exitcode: int | None
    signal: int | None
    stdout: Base64Bytes = b""
    stderr: Base64Bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: float

    @property
    def ok(self) -> bool:
        """Exited with code 0."""
        return self.exitcode == 0 and self.signal is None

    def stdout_text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """``stdout`` decoded; undecodable bytes become U+FFFD unless ``errors`` says otherwise."""
        return self.stdout.decode(encoding, errors)

    def stderr_text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """``stderr`` decoded, as :meth:`stdout_text`."""
        return self.stderr.decode(encoding, errors)

    def describe(self) -> str:
        """How it ended, in words: ``exit code 3``, ``killed by signal 9``."""
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit code {self.exitcode}"


class RunHandle(BaseModel):
    """A guest process started by :meth:`RunOps.run`: what it takes to finish it later.

    Plain data that outlives the agent object and the process that started the command:
    :meth:`dumps` it (JSON), :meth:`loads` it elsewhere, and give it to
    :meth:`RunOps.collect` (wait for the result) or :meth:`RunOps.cancel` (kill the
    process, remove its capture files) of any agent object of the same guest.
    :attr:`CommandTimeoutError.handle <qga_libvirt.errors.CommandTimeoutError>` is one.

    ``files``: the guest files holding its stdout and stderr (capture in files), empty
    when the agent captures them. ``started``: wall-clock time (``time.time()``).
    """

    model_config = ConfigDict(frozen=True)

    pid: int
    argv: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    capture: bool = True
    started: float = 0.0

    def dumps(self) -> str:
        """The handle as JSON text."""
        return self.model_dump_json()

    @classmethod
    def loads(cls, text: str | bytes) -> RunHandle:
        """A handle from :meth:`dumps`' text.

        Raises:
            ValueError: the text is not a handle.
        """
        return cls.model_validate_json(text)
