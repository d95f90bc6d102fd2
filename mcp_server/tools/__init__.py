"""The tools, one function each, in groups; the inventory derived from the command declarations.

One module per group (:mod:`.inventory`, :mod:`.files`, :mod:`.run`, :mod:`.freeze`,
:mod:`.credentials`, :mod:`.power`, :mod:`.raw`) and the shared part (:mod:`.base`:
results, fencing, the reply budget); importing them in this order is what builds the
catalogue, in the order tools/list shows it.

A tool is a function ``body(call, **params) -> Result`` declared with :func:`tool`:

- its parameters, typed and described (``Annotated[..., Field(description=...)]``), are
  the tool's input schema; a tool about a domain also gets a ``domain`` parameter first
  (added by the server, which resolves it and checks the allow-list before the body runs);
- its return type, a :class:`Result` model, is the output schema: every tool returns
  structured content;
- its docstring is the description: what it does and when to use it;
- its annotations (read-only, destructive, idempotent, open world) are set explicitly.

The read-only inventory (get_osinfo, get_fsinfo, ...) is not written out here: every
declared command that takes no argument and does not change the guest becomes a tool,
with its summary and facts from :mod:`qga_libvirt.commands`.
"""

from __future__ import annotations

from ..messages import GUEST_NOTE
from . import credentials, files, freeze, inventory, power, raw, run  # noqa: F401 - registers
from .base import CATALOGUE, DomainArg, Result, ToolSpec, catalogue, tool
from .credentials import ssh_public_key
from .inventory import command_tools

__all__ = [
    "CATALOGUE",
    "GUEST_NOTE",
    "DomainArg",
    "Result",
    "ToolSpec",
    "catalogue",
    "command_tools",
    "ssh_public_key",
    "tool",
]
