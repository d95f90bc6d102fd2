"""The demo: the library working on a real guest agent.

Until the libvirt backend and the tiny VM land, it runs against the host's own qemu-ga,
started on a unix socket in a temp dir.
"""

from __future__ import annotations

from qga_libvirt import GuestAgent, GuestAgentError
from qga_libvirt.testing import HostAgent


def main() -> None:
    with HostAgent() as host, GuestAgent.from_socket(host.socket) as agent:
        agent.ping()
        info = agent.info()
        enabled = sum(c.enabled for c in info.supported_commands)
        print(f"agent at {host.socket}: qemu-ga {info.version}, {enabled} commands enabled")
        print("host name:", agent.call("guest-get-host-name")["host-name"])
        try:
            agent.call("guest-shutdown")
        except GuestAgentError as exc:
            print(f"guest-shutdown is blocked on the host agent, as it should be: {exc}")


if __name__ == "__main__":
    main()
