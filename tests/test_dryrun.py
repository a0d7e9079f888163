"""The dry run and previews, end to end through the CLI: files, manifest, preflight, header safety."""

from __future__ import annotations

import csv
import re
import email
import email.policy
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_no_traceback

HEADER = "bioguide_id,full_name,last_name,chamber,state,district,party,email,committees,staffer"


def parse(path):
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def manifest(run_dir):
    with open(run_dir / "manifest.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_dry_run_of_the_sample_campaign_writes_one_eml_per_letter(project, outreach):
    r = outreach("--config", project.config, "send")
    assert r.code == 0, r.err
    assert "nothing was sent" in r.out and "rendered: 14 letters" in r.out
    [run] = project.runs()
    rows = manifest(run)
    assert list(rows[0]) == ["letter_id", "email", "bioguide_id", "name", "subject", "file"]
    assert len(rows) == 14 == len(list(run.glob("*.eml")))
    assert [row["file"] for row in rows][:3] == ["0001-S001198-sullivan.eml", "0002-W000437-wicker.eml",
                                                 "0003-K000384-kaine.eml"]
    assert (run / "manifest.csv").read_bytes().count(b"\r") == 0     # plain \n line endings
    for number, row in enumerate(rows, 1):
        assert re.fullmatch(r"%04d-[A-Za-z0-9-]{1,40}\.eml" % number, row["file"]), row["file"]
        assert row["bioguide_id"] in row["file"]
        msg = parse(run / row["file"])
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["To"].addresses[0].addr_spec == row["email"]
        assert msg["X-Outreach-Letter-Id"] == row["letter_id"]


def test_only_the_newest_keep_runs_folders_are_kept_and_nothing_else_is_touched(project, outreach):
    project.write_config(extra="")
    text = project.config.read_text()
    project.config.write_text(text.replace("[delivery]\n", "[delivery]\nkeep_runs = 2\n", 1))
    assert "keep_runs = 2" in project.config.read_text()
    mine = project.root / "outbox" / "korea-exception" / "my-notes"
    mine.mkdir(parents=True)
    for _ in range(4):
        assert outreach("--config", project.config, "send").code == 0
    runs = project.runs()
    assert len(runs) == 3 and mine in runs          # two runs, and the folder a person made
    assert all(len(list(r.glob("*.eml"))) == 14 for r in runs if r != mine)


def test_the_default_keeps_ten_runs(project, outreach):
    from outreach.config import load_config

    assert load_config(project.config).delivery.keep_runs == 10


def test_letter_ids_are_stable_across_runs(project, outreach):
    outreach("--config", project.config, "send")
    outreach("--config", project.config, "send")
    first, second = project.runs()
    assert [r["letter_id"] for r in manifest(first)] == [r["letter_id"] for r in manifest(second)]


def test_dry_run_over_the_whole_congress(shared, project, outreach):
    r = outreach("--config", project.config, "send", "--contacts", shared / "congress" / "contacts-congress.csv")
    assert r.code == 0, r.err
    [run] = project.runs()
    files = list(run.glob("*.eml"))
    assert len(files) == 537
    titles = {}
    for path in files:
        msg = parse(path)
        text = msg.get_body(("plain",)).get_content()
        titles[msg["To"].addresses[0].addr_spec] = text.split("\n\n")[1].split()[1]
    assert sum(t == "Senator" for t in titles.values()) == 100
    assert sum(t == "Delegate" for t in titles.values()) == 5
    assert sum(t == "Resident" for t in titles.values()) == 1


def test_non_ascii_names_stay_readable_in_headers(project, outreach):
    project.write_contacts(HEADER + "\nH001103,Pablo José Hernández,Hernández Rivera,house,PR,0,Democrat,"
                           "pablo@house.example.org,HSII,\n")
    outreach("--config", project.config, "send")
    [run] = project.runs()
    [path] = run.glob("*.eml")
    raw = path.read_bytes()
    assert raw.isascii()  # encoded on the wire ...
    msg = parse(path)
    assert msg["To"].addresses[0].display_name == "Pablo José Hernández"  # ... and readable parsed
    assert "Dear Resident Commissioner Hernández:" in msg.get_body(("plain",)).get_content()


def test_no_cr_or_lf_from_contact_data_reaches_a_header(project, outreach, tmp_path):
    # A custom column used in the subject carries a header-injection attempt.
    templates = tmp_path / "t"
    shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    (templates / "subject.txt.j2").write_text("Letter for {{ contact.note }}\n")
    project.write_config(templates=templates)
    project.write_contacts(HEADER + ",note\n"
                           'S001198,Dan Sullivan,Sullivan,senate,AK,,R,dan@senate.example.org,,,'
                           '"office\r\nBcc: attacker@evil.example.org\r\nX-Evil: 1"\n')
    r = outreach("--config", project.config, "send")
    assert r.code == 0, r.err
    [run] = project.runs()
    [path] = run.glob("*.eml")
    msg = parse(path)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "Letter for office Bcc: attacker@evil.example.org X-Evil: 1"
    head = path.read_bytes().split(b"\n\n", 1)[0]
    assert not any(line.startswith((b"Bcc", b"X-Evil")) for line in head.split(b"\n"))


def test_header_guard_in_the_message_builder_itself():
    from outreach.message import Message, to_eml

    m = Message(letter_id="abc", campaign="c", from_name="Org\r\nBcc: x@evil.example.org",
                from_email="org@example.org", to_name='A "B"\nCc: y@evil.example.org', to_email="a@b.example.org",
                subject="Hi\r\nX-Injected: yes", text="t", html="<p>h</p>")
    msg = email.message_from_bytes(to_eml(m), policy=email.policy.default)
    assert msg["Bcc"] is None and msg["Cc"] is None and msg["X-Injected"] is None
    assert msg["To"].addresses[0].addr_spec == "a@b.example.org"
    with pytest.raises(ValueError):
        to_eml(Message(letter_id="abc", campaign="c", from_name="", from_email="org@example.org", to_name="",
                       to_email="a@b.example.org\nBcc: x@y.org", subject="s", text="t", html="h"))


@pytest.mark.parametrize("before", [0, 1, 498, 499, 500, 997, 998, 1500])
@pytest.mark.parametrize("length,long", [(997, False), (998, True), (2500, True)])
def test_a_body_line_too_long_for_smtp_goes_quoted_printable(before, length, long):
    """RFC 5322 caps a line at 998 characters: wherever such a line sits, the part is
    quoted-printable and parses back to the same text; shorter lines go as they are."""
    from outreach.message import Message, to_eml

    text = "a" * before + "\n" + "b" * length + "\nend\n"
    m = Message(letter_id="abc", campaign="c", from_name="", from_email="org@example.org", to_name="",
                to_email="a@b.example.org", subject="s", text=text, html="<p>h</p>")
    raw = to_eml(m)
    assert max(map(len, raw.split(b"\n"))) < 998 or not long
    part = next(p for p in email.message_from_bytes(raw, policy=email.policy.default).walk()
                if p.get_content_type() == "text/plain")
    long = long or before >= 998
    assert part["Content-Transfer-Encoding"] == ("quoted-printable" if long else "7bit")
    assert part.get_content() == text


# -- preflight: nothing is written when any letter fails --------------------------------

def broken_templates(tmp_path, file: str, content: str):
    templates = tmp_path / "broken"
    shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    (templates / file).write_text(content)
    return templates


def test_a_syntax_error_stops_the_run_with_file_and_line(project, outreach, tmp_path):
    project.write_config(templates=broken_templates(tmp_path, "letter.txt.j2", "Dear {{ member.title | }}\n\nBody\n"))
    r = outreach("--config", project.config, "send")
    assert r.code == 2
    assert "letter.txt.j2, line 1" in r.err and "syntax error" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert project.leftovers() == []
    assert_no_traceback(r)


@pytest.mark.parametrize("template,expected", [
    # Only Mississippi's senator (Wicker, line 3 of the list) meets the undefined variable.
    ("{{ member.salutation }}:\n\n{% if member.state == 'MS' %}Fax {{ contact.fax }}{% endif %}\n",
     ["letter.txt.j2, line 3", "undefined", "fax", "line 3 (roger.wicker@senate.example.org, W000437)"]),
    # A senator has no district: arithmetic on it fails in the template's own code, not ours.
    ("{{ member.salutation }}:\n{% if member.chamber == 'senate' %}District {{ member.district + 1 }}{% endif %}\n",
     ["letter.txt.j2, line 2", "TypeError", "line 2 (dan.sullivan@senate.example.org, S001198)"]),
], ids=["undefined-variable", "error-in-template-code"])
def test_a_template_failing_for_a_recipient_names_file_line_problem_and_recipient(project, outreach, tmp_path,
                                                                                  template, expected):
    project.write_config(templates=broken_templates(tmp_path, "letter.txt.j2", template))
    r = outreach("--config", project.config, "send")
    assert r.code == 2
    line = r.err.strip()
    assert len(line.splitlines()) == 1
    assert all(part in line for part in expected), line
    assert project.leftovers() == []
    assert_no_traceback(r)


def test_preflight_names_the_first_failing_recipient_in_list_order(shared, project, outreach, tmp_path):
    templates = broken_templates(tmp_path, "letter.txt.j2",
                                 "{{ member.salutation }}:\n{% if member.state == 'WY' %}{{ nope }}{% endif %}\n")
    project.write_config(templates=templates)
    r = outreach("--config", project.config, "send", "--contacts", shared / "congress" / "contacts-congress.csv")
    assert r.code == 2
    assert "'nope' is undefined" in r.err and "letter.txt.j2, line 2" in r.err
    first_wy = next(line for line in (shared / "congress" / "contacts-congress.csv").read_text().splitlines()
                    if ",WY," in line)
    assert first_wy.split(",")[0] in r.err
    assert project.leftovers() == []


def test_a_letter_that_cannot_be_written_stops_the_run_and_publishes_nothing(project):
    """The disk fills up at the fourth letter: one line naming the file, and no folder left."""
    from outreach.config import load_config
    from outreach.errors import UserError
    from outreach.run import DRY_RUN, CampaignRun, Request
    from outreach.transports.outbox import OutboxTransport

    class DiskFull(OutboxTransport):
        def send(self, message):
            if len(self.rows) == 3:
                raise UserError(f"{self.partial}/{message.letter_id}.eml: cannot write to the outbox: "
                                "No space left on device; nothing was written")
            return super().send(message)

    cfg = load_config(project.config)
    transport = DiskFull(cfg.outbox_dir, "korea-exception")
    with pytest.raises(UserError, match="No space left on device"):
        CampaignRun(cfg, Request(DRY_RUN), transport=transport).execute()
    assert project.runs() == [] and project.leftovers() == []


def _interrupted_dry_run(project, interrupt) -> tuple[subprocess.Popen, str]:
    """Start a dry run of 20,000 letters; once it is writing, call `interrupt(proc)`; return
    the process and its stderr. Nothing of it outlives this."""
    from test_crash import many_contacts

    many_contacts(project, 20000)
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "send"],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            partial = [p for p in project.leftovers() if p.name.endswith(".partial")]
            if partial and sum(1 for _ in partial[0].iterdir()) > 300:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the dry run never got going")
        interrupt(proc)
        _, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the run still alive
        except ProcessLookupError:
            pass
        proc.wait()
    return proc, err


@pytest.mark.parametrize("whom", ["the process", "its process group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_dry_run_stopped_midway_leaves_nothing_behind(project, whom, sig):
    """Stopped while it writes (by a service manager, or Ctrl-C): one line, no traceback, and
    no hidden half-written run folder left in the outbox."""
    proc, err = _interrupted_dry_run(project, lambda proc: os.killpg(proc.pid, sig) if whom == "its process group"
                                     else proc.send_signal(sig))
    assert proc.returncode == 130, err
    assert "interrupted; the dry run was stopped and nothing was written" in err and "Traceback" not in err
    assert project.leftovers() == []


@pytest.mark.parametrize("gap", [0.005, 0.02, 0.05])
def test_a_second_ctrl_c_while_cleaning_up_still_leaves_nothing_behind(project, gap):
    def twice(proc):
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole group
        time.sleep(gap)
        try:
            proc.send_signal(signal.SIGINT)  # impatient: again, while it cleans up
        except ProcessLookupError:
            pass

    proc, err = _interrupted_dry_run(project, twice)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert project.leftovers() == []


# -- audience, campaign choice, skipped rows -----------------------------------------------

@pytest.mark.parametrize("audience,expected", [
    ("", 14),
    ('chamber = "senate"', 6),
    ('states = ["VA", "NH"]', 2),
    ('parties = ["Democrat"]', 7),
    ('committees = ["SSFR"]', 3),
    ('committees = ["HSAS", "HSFA"]', 6),
    ('chamber = "house"\ncommittees = ["HSFA"]', 4),
    ('include = ["S001198", "adam.smith@house.example.org"]', 2),
    ('chamber = "senate"\nexclude = ["K000384"]', 5),
    ('committees = ["SSAS"]\ninclude = ["N000147"]', 5),
    ('states = ["WY"]', 0),
])
def test_audience_filters(project, outreach, audience, expected):
    project.write_config(extra=f"[campaigns.korea-exception.audience]\n{audience}\n")
    r = outreach("--config", project.config, "send")
    assert f"audience: {expected} recipients" in r.out, r.out + r.err
    [run] = project.runs()
    assert len(manifest(run)) == expected


def test_two_campaigns_need_a_choice(project, outreach):
    project.write_config(extra=f'[campaigns.second]\ncontacts = "contacts.csv"\n'
                               f'templates = "{ROOT / "templates" / "korea-exception"}"\n')
    r = outreach("--config", project.config, "send")
    assert r.code == 2 and "korea-exception, second" in r.err and "--campaign" in r.err
    r = outreach("--config", project.config, "send", "--campaign", "second", "--limit", "2")
    assert r.code == 0 and "rendered: 2 letters" in r.out


def test_invalid_rows_are_skipped_with_reasons_and_exit_1(project, outreach):
    text = (ROOT / "contacts" / "sample.csv").read_text() + "X000001,Bad,Row,,Bad Row,house,ZZ,1,,,,bad@,,\n"
    project.write_contacts(text)
    r = outreach("--config", project.config, "send")
    assert r.code == 1
    # Rows are counted, problems listed: one row with two bad cells is one row skipped.
    assert "rendered: 14 letters" in r.out and "skipped: 1 row (2 problems)" in r.out
    assert r.out.count("line 16:") == 2


def test_live_is_never_the_default(project, outreach):
    r = outreach("--config", project.config, "send", "--live", "--dry-run")
    assert r.code == 2 and "contradict" in r.err


# -- preview --------------------------------------------------------------------------------

def test_preview_one_recipient_as_text(project, outreach):
    r = outreach("--config", project.config, "preview", "--to", "M001219")
    assert r.code == 0
    assert "Dear Delegate Moylan:" in r.out and "James (Jim)" not in r.out
    assert project.leftovers() == []


def test_preview_formats_and_out_dir(project, outreach, tmp_path):
    out = tmp_path / "previews"
    for fmt, suffix in (("text", "txt"), ("html", "html"), ("eml", "eml")):
        r = outreach("--config", project.config, "preview", "--limit", "3", "--format", fmt, "--out", out)
        assert r.code == 0, r.err
        assert len(list(out.glob(f"*.{suffix}"))) == 3
    [eml] = list(out.glob("*.eml"))[:1]
    assert parse(eml).get_content_type() == "multipart/alternative"


def test_preview_of_someone_outside_the_audience_says_so(project, outreach):
    project.write_config(extra='[campaigns.korea-exception.audience]\nchamber = "house"\n')
    r = outreach("--config", project.config, "preview", "--to", "S001198")
    assert r.code == 2 and "not in the audience" in r.err


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise():
    import io

    from outreach.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    plain = io.StringIO()
    with Progress(4000, "writing letters", stream=plain) as p:
        for _ in range(4000):
            p.advance()
    assert plain.getvalue().splitlines() == ["writing letters: 1000/4000", "writing letters: 2000/4000",
                                             "writing letters: 3000/4000"]
    quiet = io.StringIO()
    with Progress(200, "writing letters", stream=quiet) as p:
        for _ in range(200):
            p.advance()
    assert quiet.getvalue() == ""  # a short run off a terminal says nothing
    terminal = Terminal()
    with Progress(4000, "writing letters", stream=terminal) as p:
        p.advance(2000)
        p._bar.refresh()
        assert "2000/4000" in terminal.getvalue() and "writing letters: 1000" not in terminal.getvalue()
