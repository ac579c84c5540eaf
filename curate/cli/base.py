"""The command group and what every command shares: one-line errors, the run lock of a writer,
NAME=VALUE options."""

from __future__ import annotations

import os
import sys

import click

from curate.errors import CurateError


class _Command(click.Command):
    """--help lists the required options first (then the rest, in declaration order). Errors end
    the command with one line: a library error its own message and exit code; Ctrl-C a line that
    says how to resume; anything unexpected the step, the exception and a log file holding the
    full traceback (in OUT/logs/)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        return sorted(params, key=lambda p: not (isinstance(p, click.Option) and p.required))

    def invoke(self, ctx):
        from curate.supervise import INTERRUPTED, crash_report

        try:
            return super().invoke(ctx)
        except (CurateError, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)
        except Exception as exc:
            out = ctx.params.get("out")
            click.echo(crash_report(exc, os.path.abspath(out) if out else None), err=True)
            sys.exit(1)


class _Group(click.Group):
    command_class = _Command
    group_class = type

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CurateError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facecurate")
def main():
    """facecurate: turn a noisy web face crawl into clean, quality-ranked training shards.

    Every input image ends up in the output shards with `keep` and a `reason`; runs resume
    where they stopped.
    """


def writer(f):
    """The command writes the run directory OUT: it holds OUT's lock (curate.io.lock) throughout,
    so a second writer is refused at once and readers never wait."""
    import functools

    @functools.wraps(f)
    def wrapped(*args, **kw):
        from curate.io.lock import run_lock

        with run_lock(kw["out"]):
            return f(*args, **kw)

    return wrapped


def name_values(values, hint: str, typed: bool = False) -> dict:
    """NAME=VALUE options -> {name: value}; ``typed``: numbers and true/false become such (else
    strings, bound as they are)."""
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep:
            raise click.BadParameter(f"{v!r}: expected NAME=VALUE", param_hint=hint)
        if typed:
            try:
                val = int(val) if val.lstrip("-").isdigit() else float(val)
            except ValueError:
                val = {"true": True, "false": False}.get(val.lower(), val)
        out[k.strip()] = val
    return out
