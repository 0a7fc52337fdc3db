"""The `soicurate` command line. Commands live in their own modules and are imported only
when run (or listed), and each module imports its heavy dependencies inside the command, so
that `soicurate --help` starts fast."""

from __future__ import annotations

import importlib
import os
import sys

import click

from soicurate import __version__

COMMANDS = {
    "audit": "soicurate.cli.audit:audit",
    "compare": "soicurate.cli.compare:compare",
    "curate": "soicurate.cli.curate:curate",
    "datamap": "soicurate.cli.datamap:datamap",
    "demo": "soicurate.cli.demo:demo",
    "example-log": "soicurate.cli.example_log:example_log",
    "import": "soicurate.cli.import_log:import_log",
    "multi": "soicurate.cli.multi:multi",
    "profile": "soicurate.cli.profile:profile",
    "push": "soicurate.cli.push:push",
    "seeds": "soicurate.cli.seeds:seeds",
    "train": "soicurate.cli.train:train",
    "two-stage": "soicurate.cli.two_stage:two_stage",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is needed."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        from soicurate.errors import SoicurateError

        try:
            return super().invoke(ctx)
        except SoicurateError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # never a bare traceback: one line, and the traceback on request
            if os.environ.get("SOICURATE_DEBUG"):
                raise
            click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (set SOICURATE_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="soicurate")
def main():
    """Find which training examples a model learns, forgets or never learns, and act on it.

    \b
    A typical session:
      soicurate example-log demo-run            # a synthetic run to try things on
      soicurate profile demo-run -o profile.parquet

    Every command has its own --help with examples.
    """
