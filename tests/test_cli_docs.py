"""Every CLI command documents itself (help text for the command and each option)."""

import click
from click.testing import CliRunner

from curate.cli import main


def test_every_command_and_option_has_help():
    assert main.help
    for name, cmd in main.commands.items():
        assert cmd.help and len(cmd.help) > 30, name
        for p in cmd.params:
            if isinstance(p, click.Option):
                assert p.help, f"{name} {p.opts}"
        r = CliRunner().invoke(main, [name, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output


def test_errors_map_to_exit_codes(tmp_path):
    r = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert r.exit_code == 3 and "no run here" in r.output  # an InputError, as for every command given a run
    r = CliRunner().invoke(main, ["run", str(tmp_path), "--out", str(tmp_path / "o"), "--detector", "yolo", "--no-progress"])
    assert r.exit_code == 2 and "unknown detector" in r.output
