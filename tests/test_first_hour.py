"""The first hour of a new organiser: each wall they met, now a clear way through."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import ROOT, assert_no_traceback
from test_live import KEY, write_live_config


# -- 1. a Python without the project's packages -------------------------------------------------------

@pytest.mark.parametrize("command", [["scheduler.py"], ["-m", "outreach", "send"]])
def test_a_python_without_the_packages_says_where_to_run_from(command, tmp_path):
    # -S leaves out site-packages: the packages outreach needs are missing, as under a system Python.
    r = subprocess.run([sys.executable, "-S", *command], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "is not installed for this Python" in line and "run it from the project's environment" in line
    assert ".venv/bin/outreach" in line and "source .venv/bin/activate" in line
    assert "bug" not in line and "Traceback" not in r.stderr


def test_the_readme_says_once_how_to_use_the_environment():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    intro = readme.split("\n## ", 1)[0]
    assert "activate it once per terminal\nwith `source .venv/bin/activate`" in intro
    assert "`.venv/bin/outreach`" in intro


# -- 3. global options after the command --------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("send", "--config", "{config}"), ("send", "--config={config}"), ("--config", "{config}", "send"),
    ("send", "--limit", "1", "--config", "{config}"),
])
def test_config_before_or_after_the_command(project, outreach, args, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)     # no config.toml here: only --config can find it
    r = outreach(*(a.format(config=project.config) for a in args))
    assert r.code == 0, r.err
    assert "nothing was sent" in r.out


def test_an_argument_after_the_separator_is_not_taken_for_the_config():
    from outreach.cli import global_options_first

    assert global_options_first(["send", "--config", "a.toml", "--", "--config", "b"]) == \
        ["--config", "a.toml", "send", "--", "--config", "b"]


# -- 10. test copies with no network ------------------------------------------------------------------

def test_test_to_with_no_network_says_so_once_and_exits_1(project, outreach, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    write_live_config(project, SimpleNamespace(url="https://api.no-such-host.invalid"), max_attempts=1)
    r = outreach("--config", project.config, "send", "--test-to", "jordan@mine-ban-advocates.org")
    assert r.code == 1, r.out + r.err
    text = r.out + r.err
    assert text.count("could not reach SendGrid at https://api.no-such-host.invalid (no network?") == 1
    assert "gaierror" not in text and "retry:" not in text
    assert_no_traceback(r)


# -- 11. a rejected row asked for by name -------------------------------------------------------------

def test_preview_of_a_rejected_row_says_it_was_rejected_and_why(project, outreach):
    path = project.root / "contacts.csv"
    text = path.read_text(encoding="utf-8")
    assert "dan.sullivan@senate.example.org" in text
    path.write_text(text.replace("dan.sullivan@senate.example.org", "dan.sullivan@", 1), encoding="utf-8")
    r = outreach("--config", project.config, "preview", "--to", "S001198")
    assert r.code == 2
    [line] = r.err.strip().splitlines()
    assert "S001198: line 2 of" in line and "was rejected by the contact check (email:" in line
    assert "no recipient" not in line


# -- 12. small things ---------------------------------------------------------------------------------

def test_one_is_singular(project, outreach):
    r = outreach("--config", project.config, "send", "--limit", "1")
    assert "rendered: 1 letter" in r.out and "1 letters" not in r.out
    one_house = project.write_contacts("full_name,chamber,state,district,email\n"
                                       "Adam Smith,house,WA,9,adam.smith@house.example.org\n", "one.csv")
    r = outreach("contacts", "check", one_house)
    assert "1 row, 1 valid" in r.out and "rows" not in r.out.split("\n")[0]


def test_report_json_is_indented_on_a_terminal_and_compact_in_a_pipe(project, outreach):
    import pty

    outreach("--config", project.config, "send")
    piped = subprocess.run([sys.executable, "-m", "outreach", "--config", str(project.config), "report",
                            "--format", "json"], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "\n  " not in piped.stdout.strip()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "report",
                             "--format", "json"], stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    seen, deadline = b"", time.time() + 60
    while proc.poll() is None or select.select([leader], [], [], 0.1)[0]:
        assert time.time() < deadline
        if select.select([leader], [], [], 0.1)[0]:
            try:
                seen += os.read(leader, 65536)
            except OSError:
                break
    os.close(leader)
    text = seen.decode().replace("\r\n", "\n")
    shown, scripted = json.loads(text), json.loads(piped.stdout)
    for data in (shown, scripted):
        data["summary"].pop("generated_at")
    assert text.startswith("{\n  \"") and shown == scripted


def test_an_unquoted_toml_value_hints_at_quotes(project, outreach):
    project.config.write_text(project.config.read_text().replace('name = "Jordan Organizer"',
                                                                  "name = Jordan Organizer"))
    r = outreach("--config", project.config, "config", "check")
    assert r.code == 2 and "invalid TOML" in r.err and 'text needs quotes (name = "Jordan Organizer")' in r.err


def test_previews_and_outboxes_stay_out_of_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"previews/", "outbox/"} <= set(ignored)


SCHEDULE = """
[campaigns.korea-exception.schedule]
days = "mon-fri"
window = "09:30-16:30"
every = "15m"
batch_size = 5
live = {live}
{extra}
"""


@pytest.mark.parametrize("live,extra,expected", [
    ("true", "", r"expected finish: \w{3} \d{4}-\d\d-\d\d \d\d:\d\d E[SD]T \(\d\d:\d\d \w+ here\)$"),
    ("false", "", r"expected finish: \w{3} \d{4}-\d\d-\d\d \d\d:\d\d E[SD]T .*, once live = true"),
    ("true", "daily_cap = 2", r"expected finish: \w{3} \d{4}-\d\d-\d\d \d\d:\d\d E[SD]T"),
])
def test_schedule_show_gives_an_expected_finish(project, outreach, live, extra, expected):
    project.write_config(extra=SCHEDULE.format(live=live, extra=extra))
    r = outreach("--config", project.config, "schedule", "show")
    assert r.code == 0, r.err
    line = next(line for line in r.out.splitlines() if "expected finish" in line)
    assert re.search(expected, line), line


def test_schedule_show_says_why_there_is_no_finish(project, outreach):
    project.write_config(extra=SCHEDULE.format(live="true", extra=""))
    assert outreach("--config", project.config, "schedule", "pause", "korea-exception").code == 0
    r = outreach("--config", project.config, "schedule", "show")
    assert "expected finish: none while paused (`outreach schedule resume korea-exception`)" in r.out
    outreach("--config", project.config, "schedule", "resume", "korea-exception")
    project.write_config(extra=SCHEDULE.format(live="true", extra='start = 2030-01-01T09:30:00'))
    r = outreach("--config", project.config, "schedule", "show")
    assert "expected finish: Tue 2030-01-01 09:30" in r.out or "expected finish: Wed 2030-01-02" in r.out, r.out


def test_campaign_new_copies_the_letters_and_adds_the_table(project, outreach, tmp_path):
    import shutil

    shutil.copytree(ROOT / "templates" / "korea-exception", project.root / "templates" / "korea-exception")
    project.write_config(templates="templates/korea-exception")
    before = project.config.read_text()
    r = outreach("--config", project.config, "campaign", "new", "second-ask")
    assert r.code == 0, r.err
    after = project.config.read_text()
    assert after.startswith(before)      # comments and everything else as they were
    assert '[campaigns.second-ask]\ncontacts = "contacts.csv"\ntemplates = "templates/second-ask"\n' in after
    copied = project.root / "templates" / "second-ask"
    assert sorted(p.name for p in copied.iterdir()) == \
        sorted(p.name for p in (ROOT / "templates" / "korea-exception").iterdir())
    check = outreach("--config", project.config, "config", "check")
    assert check.code == 0 and "campaign second-ask: contacts.csv + templates/second-ask: ok, 14 letters" in check.out
    preview = outreach("--config", project.config, "preview", "--campaign", "second-ask")
    assert preview.code == 0 and "Dear Senator Sullivan" in preview.out
    # Again, or a bad name: one line, nothing changed.
    for name, words in (("second-ask", "already there"), ("Bad Name", "campaign name 'Bad Name'")):
        r = outreach("--config", project.config, "campaign", "new", name)
        assert r.code == 2 and words in r.err and project.config.read_text() == after
        assert_no_traceback(r)


def test_a_ctrl_c_that_click_meets_still_exits_130(project, outreach, monkeypatch):
    """Click turns a KeyboardInterrupt it catches into Abort: still one line, and 130, not 1."""
    from outreach import run as campaign_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(campaign_run, "plan_campaign", interrupted)
    r = outreach("--config", project.config, "send")
    assert r.code == 130 and r.err.strip() == "outreach: aborted; nothing more was done"
