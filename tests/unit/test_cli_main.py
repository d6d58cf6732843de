"""The one command line `docenrich`: its subcommands and help, the console script in
pyproject.toml, `make run` calling `docenrich run`, and the older spellings still answering."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from tests.helpers.env import ROOT, TEST_ENV

SUBCOMMANDS = ["run", "web", "worker", "ingest", "sync", "search", "export", "status", "reembed", "cancel", "migrate"]


def invoke(*args: str):
    from docenrich.cli.main import cli

    return CliRunner().invoke(cli, list(args), prog_name="docenrich")


def test_help_lists_every_subcommand():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^  (\S+)\s", result.output.split("Commands:")[1], re.M)
    assert listed == SUBCOMMANDS


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_help_speaks_of_docenrich_only(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: docenrich {name} ")
    assert "flask" not in result.output and "start_celery_worker" not in result.output


def test_the_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"docenrich": "docenrich.cli.main:main"}


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(target)}:(\s|$)", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_run_calls_docenrich_run():
    assert make_recipe("run") == ["$(VENV)/bin/docenrich run"]
    assert make_recipe("worker") == ["$(VENV)/bin/docenrich worker"]
    install = make_recipe("$(VENV)/.installed")
    assert any("install -q --no-deps -e ." in line for line in install), "the install step installs the script"
    stamp = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("$(VENV)/.installed:"))
    assert "pyproject.toml" in stamp, "a new script in pyproject.toml reinstalls the package"


def test_worker_and_run_hand_their_arguments_on(monkeypatch):
    from docenrich.cli import run, worker

    seen = {}
    monkeypatch.setattr(worker, "main", lambda argv: seen.setdefault("worker", argv) and 0)
    monkeypatch.setattr(run, "main", lambda argv: seen.setdefault("run", argv) and 0)
    assert invoke("worker", "--role", "docs", "--concurrency", "2", "--include=tests.fault_tasks").exit_code == 0
    assert seen["worker"] == ["--role", "docs", "--concurrency", "2", "--include=tests.fault_tasks"]
    assert invoke("run", "--no-web").exit_code == 0 and seen["run"] == ["--no-web"]
    assert invoke("worker", "--role", "gpu").exit_code == 2


def test_the_migrate_command_keeps_its_older_name_and_the_flask_group_has_sync():
    from docenrich.cli.commands import docenrich_cli

    assert invoke("migrate-to-postgres", "--help").exit_code == 0
    assert {"ingest", "sync", "search", "export", "status", "reembed", "cancel", "migrate-to-postgres"} <= set(
        docenrich_cli.commands)


def test_the_worker_command_loads_nothing_of_the_web_app():
    code = ("import atexit, sys; atexit.register(lambda: print(sorted(m for m in sys.modules "
            "if m.startswith(('docenrich.web', 'torch', 'docenrich.cli.commands'))))); "
            "from docenrich.cli.main import main; sys.argv = ['docenrich', 'worker', '--help']; main()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **TEST_ENV},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]", out.stdout


def test_the_installed_script_answers():
    """After `pip install -e .` (the Makefile's install step) the venv has the command."""
    script = os.path.join(os.path.dirname(sys.executable), "docenrich")
    if not os.path.exists(script):
        pytest.skip(f"{script} is not installed (make install creates it)")
    out = subprocess.run([script, "--help"], env={**os.environ, **TEST_ENV}, capture_output=True, text=True,
                         timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert all(f"  {name} " in out.stdout for name in SUBCOMMANDS), out.stdout
