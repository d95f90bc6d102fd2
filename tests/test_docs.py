"""The generated docs (docs/commands.md, the tables of docs/cli.md) must not go stale."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qga_libvirt.cli import app, exits
from qga_libvirt.commands import all_commands
from scripts import docgen

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "commands.md"


def test_commands_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == docgen.commands_md(), (
        "docs/commands.md is stale: run make docs"
    )


def test_every_command_has_its_section() -> None:
    text = docgen.commands_md()
    for cmd in all_commands():
        section = text.split(f"\n### {cmd.wire}\n", 1)[1].split("\n### ", 1)[0]
        assert f"agent.{cmd.method}(" in section
        assert cmd.summary in section
        assert f"Since QEMU {cmd.facts.since}" in section
        assert cmd.facts.platforms in section
        for name in inspect.signature(cmd.build).parameters:
            assert f"| `{name}` |" in section, (cmd.wire, name)


def test_models_list_their_wire_names() -> None:
    text = docgen.commands_md()
    assert "| `data` | `buf-b64` | bytes |" in text
    assert "| `ip_address_type` | `ip-address-type` | [IpAddressType](#ipaddresstype) |" in text
    assert "`file-backed-virtual`" in text


def test_links_point_at_sections() -> None:
    text = docgen.commands_md()
    anchors = {heading.lower() for heading in re.findall(r"^### (\S+)$", text, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert links <= anchors


def test_docs_cli_md_is_up_to_date_and_complete() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert docgen.update_cli(text) == text, "docs/cli.md is stale: run make docs"
    for name in [*app.agent_subcommands(), *app.HOST_COMMANDS]:
        assert f"| `{name}` |" in text, name
    for code, _ in exits.EXIT_CODES:
        assert f"| {code} |" in text, code


def test_check_exits_1_when_stale_and_0_when_fresh(tmp_path: Path) -> None:
    cli = tmp_path / "cli.md"
    cli.write_text(f"intro\n{docgen.BEGIN}\nold\n{docgen.END}\nend\n")
    check = ["--check", "--docs", str(tmp_path)]
    assert docgen.main(check) == 1  # commands.md missing, cli.md stale
    assert not (tmp_path / "commands.md").exists()  # --check writes nothing
    assert docgen.main(["--docs", str(tmp_path)]) == 0
    assert docgen.main(check) == 0
    assert cli.read_text().startswith("intro\n")
    assert cli.read_text().endswith("\nend\n")
    (tmp_path / "commands.md").write_text(docgen.commands_md() + "edited by hand\n")
    assert docgen.main(check) == 1
    cli.write_text("no markers\n")
    assert docgen.main(["--docs", str(tmp_path)]) == 1
    assert cli.read_text() == "no markers\n"
    assert (tmp_path / "commands.md").read_text() == docgen.commands_md()  # the other one done


@pytest.mark.parametrize(("args", "code"), [(["--check"], 0), (["--docs", "/nonexistent"], 1)])
def test_the_module_runs_as_a_script(args: list[str], code: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.docgen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == code, result.stderr
