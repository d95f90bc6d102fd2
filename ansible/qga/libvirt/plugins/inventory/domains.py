# Copyright (c) qga-libvirt developers
# MIT License (see the repository's pyproject.toml)
"""Ansible inventory plugin: libvirt domains, with what their guest agents say.

Domains come from ``qga_libvirt.list_domains``; the agents of the running ones are asked
in parallel (``qga_libvirt.fleet_call``, bounded in time per domain) for their version,
OS, host name and addresses. A domain whose agent does not answer is still listed, with
``qga_agent`` saying why, in the group ``qga_agent_unavailable``.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: domains
short_description: libvirt domains as hosts, with facts from their QEMU guest agents
description:
  - Lists the domains of one or more libvirt hypervisors (running or not) as hosts that
    the C(qga.libvirt.agent) connection reaches.
  - Asks the guest agent of each running domain for its version, operating system, host
    name and IP addresses, all domains at once with a time bound per domain.
  - Groups hosts by domain state, guest OS, hypervisor and whether the agent answered.
    Domains without an agent that answers are listed too, marked (C(qga_agent)).
  - The inventory file name must end in C(qga_libvirt.yml) or C(qga_libvirt.yaml).
author: qga-libvirt developers
version_added: 0.1.0
requirements:
  - qga-libvirt (Python package) on the controller
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [qga.libvirt.domains]
  uris:
    description:
      - libvirt URIs of the hypervisors to list, local or remote
        (C(qemu:///system), C(qemu+ssh://host/system), C(qemu+tcp://host/system)).
      - Empty means what virsh would use (C(LIBVIRT_DEFAULT_URI), else C(qemu:///system)).
      - A domain reached through two URIs (same hypervisor host and UUID) is listed once.
    type: list
    elements: string
    default: []
  names:
    description:
      - Shell-style patterns (C(web*)); only domains whose name matches one are listed.
        Empty lists every domain.
    type: list
    elements: string
    default: []
  agent_facts:
    description: Ask the agents of running domains for facts (host vars C(qga_*)).
    type: boolean
    default: true
  agent_timeout:
    description:
      - Seconds each agent call waits for its reply; one domain's questions take at most
        three times that, so a hung agent cannot hold up the inventory.
    type: float
    default: 5
  max_workers:
    description: Agents asked at once.
    type: integer
    default: 16
"""

EXAMPLES = r"""
# inventory/qga_libvirt.yml
plugin: qga.libvirt.domains
uris:
  - qemu:///system
  - qemu+ssh://hv2.example.com/system
names: ["web*", "db*"]
keyed_groups:
  - key: qga_os.version_id | default('unknown')
    prefix: os_version
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
"""

import fnmatch
import re
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

try:
    from qga_libvirt import DomainInfo, GuestAgent, GuestAgentError, fleet_call, list_domains
    from qga_libvirt.discovery import open_connection
except ImportError as exc:  # pragma: no cover - depends on the controller's Python
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

CONNECTION = "qga.libvirt.agent"
UNAVAILABLE_GROUP = "qga_agent_unavailable"
AVAILABLE_GROUP = "qga_agent_ok"


def _group_name(prefix: str, value: str) -> str:
    """A valid Ansible group name: ``state_shut_off``, ``os_debian``."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', value).strip('_').lower() or 'unknown'}"


def _agent_facts(agent: GuestAgent) -> dict[str, Any]:
    """What the inventory tells about a guest; runs in a fleet worker."""
    facts: dict[str, Any] = {"qga_agent_version": agent.info().version}
    if agent.supports("guest-get-osinfo"):
        facts["qga_os"] = agent.get_osinfo().model_dump(exclude_none=True)
    if agent.supports("guest-get-host-name"):
        facts["qga_hostname"] = agent.get_host_name()
    if agent.supports("guest-network-get-interfaces"):
        addresses = []
        interfaces = {}
        for iface in agent.network_get_interfaces():
            ips = [a.ip_address for a in iface.ip_addresses or []]
            interfaces[iface.name] = {"mac": iface.hardware_address, "addresses": ips}
            if iface.name != "lo":
                addresses.extend(ips)
        facts["qga_interfaces"] = interfaces
        facts["qga_ip_addresses"] = addresses
    return facts


class InventoryModule(BaseInventoryPlugin, Constructable):
    """libvirt domains as Ansible hosts reached through their guest agents."""

    NAME = "qga.libvirt.domains"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("qga_libvirt.yml", "qga_libvirt.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if _IMPORT_ERROR is not None:
            raise AnsibleParserError(
                "the qga.libvirt.domains inventory needs the qga-libvirt Python package in "
                f"the controller's Python: pip install qga-libvirt ({_IMPORT_ERROR})"
            )
        uris = self.get_option("uris") or [None]
        seen: dict[tuple[str, str], str] = {}  # (hypervisor host, UUID) -> inventory name
        for uri in uris:
            try:
                conn = open_connection(uri)
                hypervisor = conn.getHostname()
                domains = list_domains(conn)
            except Exception as exc:
                raise AnsibleParserError(
                    f"listing the domains at {uri or 'the default URI'} failed: {exc}"
                ) from exc
            wanted = [d for d in domains if self._wanted(d.name)]
            fresh = [d for d in wanted if (hypervisor, d.uuid) not in seen]
            facts = self._facts(conn, fresh)
            for domain in fresh:
                name = domain.name
                if name in seen.values():  # another hypervisor has a domain of that name
                    name = f"{domain.name}@{hypervisor}"
                seen[(hypervisor, domain.uuid)] = name
                self._add(name, domain, uri, hypervisor, facts.get(domain.uuid))

    def _wanted(self, name: str) -> bool:
        patterns = self.get_option("names")
        return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def _facts(self, conn: Any, domains: list[DomainInfo]) -> dict[str, dict[str, Any]]:
        """Per UUID: the agent's facts, or ``qga_agent`` saying why there are none."""
        result: dict[str, dict[str, Any]] = {}
        asked = []
        for d in domains:
            if not d.running:
                result[d.uuid] = {"qga_agent": "domain not running"}
            elif d.agent_channel is None:
                result[d.uuid] = {"qga_agent": "no agent channel"}
            elif not self.get_option("agent_facts"):
                result[d.uuid] = {"qga_agent": "not asked"}
            else:
                asked.append(d)
        if not asked:
            return result
        answers = fleet_call(
            [d.uuid for d in asked],
            _agent_facts,
            max_workers=self.get_option("max_workers"),
            timeout=float(self.get_option("agent_timeout")),
            uri=conn.getURI(),
        )
        for domain, answer in zip(asked, answers, strict=True):
            if answer.ok:
                result[domain.uuid] = {"qga_agent": "connected", **answer.value}
            else:
                error = answer.error
                state = (
                    "not connected"
                    if isinstance(error, GuestAgentError) and error.is_unreachable
                    else "not answering"
                )
                result[domain.uuid] = {"qga_agent": state, "qga_agent_error": answer.error_message}
        return result

    def _add(
        self,
        name: str,
        domain: DomainInfo,
        uri: str | None,
        hypervisor: str,
        facts: dict[str, Any] | None,
    ) -> None:
        host = self.inventory.add_host(name)
        hostvars: dict[str, Any] = {
            "ansible_connection": CONNECTION,
            "ansible_qga_domain": domain.uuid,
            "ansible_libvirt_uri": domain.uri,
            "qga_domain": {
                "name": domain.name,
                "uuid": domain.uuid,
                "id": domain.id,
                "state": domain.state,
                "uri": domain.uri,
                "hypervisor": hypervisor,
                "agent_channel": domain.agent_channel.model_dump()
                if domain.agent_channel
                else None,
            },
            **(facts or {}),
        }
        for key, value in hostvars.items():
            self.inventory.set_variable(host, key, value)
        groups = [
            _group_name("state", domain.state),
            _group_name("hypervisor", hypervisor),
            AVAILABLE_GROUP if hostvars.get("qga_agent") == "connected" else UNAVAILABLE_GROUP,
        ]
        os_id = (hostvars.get("qga_os") or {}).get("id")
        if os_id:
            groups.append(_group_name("os", os_id))
        for group in groups:
            self.inventory.add_group(group)
            self.inventory.add_child(group, host)
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
        self._add_host_to_keyed_groups(
            self.get_option("keyed_groups"), hostvars, host, strict=strict
        )
