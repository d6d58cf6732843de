"""`docenrich`: the one command line of the service (`[project.scripts]` in pyproject.toml).

    docenrich run | web | worker --role docs|models|all
    docenrich ingest | sync | search | export | status | reembed | cancel | migrate

Each subcommand is imported only when it runs (or for --help), so a worker or the web server
never loads the others. The commands that work on the store build the app themselves, through
Flask's ScriptInfo, exactly as `flask --app app docenrich COMMAND` (which still works) does.
"""
from __future__ import annotations

import importlib

import click
from flask.cli import ScriptInfo

# name -> "module:attribute", in the order --help lists them.
COMMANDS = {
    "run": "docenrich.cli.service:run_command",
    "web": "docenrich.cli.service:web_command",
    "worker": "docenrich.cli.service:worker_command",
    "ingest": "docenrich.cli.commands:ingest_command",
    "sync": "docenrich.cli.sync:sync_command",
    "search": "docenrich.cli.commands:search_command",
    "export": "docenrich.cli.admin:export_command",
    "status": "docenrich.cli.admin:status_command",
    "reembed": "docenrich.cli.reembed:reembed_command",
    "cancel": "docenrich.cli.admin:cancel_command",
    "migrate": "docenrich.cli.migrate:migrate_command",
}
# Older names still accepted (not listed): the flask spelling calls migrate `migrate-to-postgres`.
ALIASES = {"migrate-to-postgres": "migrate"}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(ALIASES.get(cmd_name, cmd_name))
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


def load_app():
    """The web app the store commands run in (settings from defaults, `.env` and the environment)."""
    from docenrich.web import create_app

    return create_app()


@click.group("docenrich", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="docenrich", prog_name="docenrich")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """docenrich: run the service, ingest and sync folders, search, export, re-embed, status."""
    # with_appcontext finds the app here, as it would under `flask --app app`.
    ctx.obj = ScriptInfo(create_app=load_app, set_debug_flag=False)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="docenrich")


if __name__ == "__main__":
    main()
