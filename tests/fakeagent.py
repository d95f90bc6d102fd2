"""The scripted fake agent now ships in :mod:`qga_libvirt.testing`; kept for the tests' imports."""

from qga_libvirt.testing import FakeAgent, Handler, Peer, line

__all__ = ["FakeAgent", "Handler", "Peer", "line"]
