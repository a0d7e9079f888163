"""The command line skeleton: global options first, exit codes, help that starts at once."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_help_lists_the_commands(outreach):
    r = outreach("--help")
    assert r.code == 0
    for command in ("contacts", "config"):
        assert command in r.out


def test_python_dash_m_and_console_script_agree():
    a = subprocess.run([sys.executable, "-m", "outreach", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert a.returncode == 0 and "outreach" in a.stdout


def test_unknown_command_is_a_usage_error_exit_2(outreach):
    r = outreach("frobnicate")
    assert r.code == 2 and "No such command" in r.err


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from outreach.cli import run; run(['--help']); "
            "heavy = [m for m in ('pandas', 'sqlalchemy', 'sendgrid', 'pydantic', 'jinja2', 'rich', 'starlette')"
            " if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    fence = readme.index("```sh")
    run_cmd, test_cmd = readme[fence + 1], readme[fence + 2]
    assert "outreach" in run_cmd and "pytest" in test_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_an_internal_error_is_one_line_and_exit_3_never_1(project, outreach, monkeypatch):
    """A bug of ours: scripts read 1 as "ran, needs attention", so a bug has its own code."""
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("outreach.run.plan_campaign", broken)
    r = outreach("--config", project.config, "send")
    assert r.code == 3 and "internal error: RuntimeError: a bug; this is a bug" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
