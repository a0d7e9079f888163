"""The dry run and previews, end to end through the CLI: files, manifest, preflight, header safety."""

from __future__ import annotations

import csv
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
    for row in rows:
        assert row["file"] == f"{row['letter_id']}.eml"
        msg = parse(run / row["file"])
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["To"].addresses[0].addr_spec == row["email"]
        assert msg["X-Outreach-Letter-Id"] == row["letter_id"]


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
    assert "Dear Resident Commissioner Hernández Rivera:" in msg.get_body(("plain",)).get_content()


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


def test_preflight_holds_in_a_large_parallel_run(shared, project, outreach, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTREACH_WORKERS", "2")
    templates = broken_templates(tmp_path, "letter.txt.j2",
                                 "{{ member.salutation }}:\n{% if member.state == 'WY' %}{{ nope }}{% endif %}\n")
    project.write_config(templates=templates)
    r = outreach("--config", project.config, "send", "--contacts", shared / "congress" / "contacts-congress.csv")
    assert r.code == 2
    assert "'nope' is undefined" in r.err and "letter.txt.j2, line 2" in r.err
    # The first Wyoming member in list order, as a one-process run would report.
    first_wy = next(line for line in (shared / "congress" / "contacts-congress.csv").read_text().splitlines()
                    if ",WY," in line)
    assert first_wy.split(",")[0] in r.err
    assert project.leftovers() == []


def test_letters_rendered_in_batches_still_fail_in_letter_order():
    """Rendering runs ahead of writing by a batch; the failure reported is still the first
    a letter-by-letter run meets, and an abandoned range stops at a batch boundary."""
    from types import SimpleNamespace

    from outreach import dryrun
    from outreach.errors import UserError

    written = []

    def render(contact):
        i = contact.i
        if i == 7:
            raise UserError("render failed at 7")
        return SimpleNamespace(letter_id=str(i), to_email=f"{i}@example.org", to_name="", subject="s",
                               text="t", html="h")

    class Run:
        def write(self, message, bioguide_id):
            if message.letter_id == "3":
                raise UserError("disk full at 3")
            written.append(message.letter_id)

    plan = SimpleNamespace(templates=SimpleNamespace(render=render), name="c")
    cfg = SimpleNamespace(sender=SimpleNamespace(name="", email="o@example.org", reply_to=None))
    n = 3 * dryrun.BATCH
    recipients = [SimpleNamespace(i=i, bioguide_id="") for i in range(n)]
    with pytest.raises(dryrun._LetterFailed) as failed:
        dryrun._write_range(plan, cfg, Run(), recipients, 0, n, lambda: None)
    assert failed.value.index == 3 and written == ["0", "1", "2"]
    written.clear()
    with pytest.raises(dryrun._LetterFailed) as failed:
        dryrun._write_range(plan, cfg, Run(), recipients, 4, n, lambda: None)
    assert failed.value.index == 7 and written == ["4", "5", "6"]
    written.clear()
    dryrun._write_range(plan, cfg, Run(), recipients, 8, n, lambda: None, abandon=lambda i: i >= 8 + dryrun.BATCH)
    assert written == [str(i) for i in range(8, 8 + dryrun.BATCH)]


def test_a_parallel_run_writes_the_same_letters_as_a_sequential_one(shared, project, outreach, monkeypatch):
    contacts = shared / "congress" / "contacts-congress.csv"
    monkeypatch.setenv("OUTREACH_WORKERS", "1")
    outreach("--config", project.config, "send", "--contacts", contacts)
    monkeypatch.setenv("OUTREACH_WORKERS", "3")
    outreach("--config", project.config, "send", "--contacts", contacts)
    one, three = project.runs()
    assert manifest(one) == manifest(three)
    for row in manifest(one):
        a, b = (one / row["file"]).read_bytes(), (three / row["file"]).read_bytes()
        assert a.split(b"\n\n", 1)[1] == b.split(b"\n\n", 1)[1]


def _interrupted_dry_run(project, interrupt) -> tuple[subprocess.Popen, str]:
    """Start a dry run of 20,000 letters with two workers; once it is writing, call
    `interrupt(proc)`; return the process and its stderr. Nothing of it outlives this."""
    from test_crash import many_contacts

    many_contacts(project, 20000)
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "send"],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OUTREACH_WORKERS": "2"})
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
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the run still alive, workers included
        except ProcessLookupError:
            pass
        proc.wait()
    return proc, err


@pytest.mark.parametrize("whom", ["the process", "its process group"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_dry_run_stopped_midway_leaves_nothing_behind(project, whom, sig):
    """Stopped while its workers write (by a service manager, or Ctrl-C): one line, no
    traceback, and no hidden half-written run folder left in the outbox."""
    proc, err = _interrupted_dry_run(project, lambda proc: os.killpg(proc.pid, sig) if whom == "its process group"
                                     else proc.send_signal(sig))
    assert proc.returncode == 1, err
    assert "aborted; nothing more was done" in err and "Traceback" not in err
    assert project.leftovers() == []


def _dying_worker(monkeypatch, how):
    """Make the worker that takes the slice starting at letter 250 end by `how()`."""
    from outreach import dryrun

    real, parent = dryrun._write_range, os.getpid()

    def write_range(plan, cfg, run, recipients, start, stop, *rest):
        if os.getpid() != parent and start == 250:
            how()
        return real(plan, cfg, run, recipients, start, stop, *rest)

    monkeypatch.setattr(dryrun, "_write_range", write_range)
    monkeypatch.setenv("OUTREACH_WORKERS", "2")


def test_a_worker_killed_midway_is_reported_and_nothing_is_published(shared, project, outreach, monkeypatch):
    _dying_worker(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))  # the kernel's OOM killer, say
    r = outreach("--config", project.config, "send", "--contacts", shared / "congress" / "contacts-congress.csv")
    assert r.code == 1, r.out + r.err
    assert "dry-run worker process stopped unexpectedly (killed by signal 9); nothing was published" in r.err
    assert project.runs() == [] and project.leftovers() == []
    assert_no_traceback(r)


def test_a_worker_that_fails_outside_any_letter_is_one_line_and_nothing_is_published(shared, project, outreach,
                                                                                      monkeypatch):
    def fail():
        raise MemoryError("cannot allocate")

    _dying_worker(monkeypatch, fail)
    r = outreach("--config", project.config, "send", "--contacts", shared / "congress" / "contacts-congress.csv")
    assert r.code == 1, r.out + r.err
    assert "a dry-run worker failed: MemoryError: cannot allocate" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert project.runs() == [] and project.leftovers() == []
    assert_no_traceback(r)


def test_a_bug_in_a_worker_is_an_internal_error_after_any_earlier_letter_failure(shared, project, outreach,
                                                                                 tmp_path, monkeypatch):
    def bug():
        raise TypeError("unsupported operand")

    _dying_worker(monkeypatch, bug)
    contacts = shared / "congress" / "contacts-congress.csv"
    r = outreach("--config", project.config, "send", "--contacts", contacts)
    assert r.code == 1 and "internal error: RuntimeError: in a dry-run worker: TypeError: unsupported operand" in r.err
    assert project.runs() == [] and project.leftovers() == []
    # A template failing at the very first letter comes first, as in a one-process run.
    project.write_config(templates=broken_templates(tmp_path, "letter.txt.j2", "{{ nope }}\n"))
    r = outreach("--config", project.config, "send", "--contacts", contacts)
    assert r.code == 2 and "'nope' is undefined" in r.err, r.err
    assert project.runs() == [] and project.leftovers() == []


def test_interrupts_are_held_only_while_workers_start():
    from outreach import dryrun

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with dryrun._interrupts() as interrupts:
        assert signal.getsignal(signal.SIGTERM) is interrupts
        with pytest.raises(KeyboardInterrupt):
            interrupts(signal.SIGTERM, None)
        with pytest.raises(KeyboardInterrupt):
            with interrupts.held():
                interrupts(signal.SIGINT, None)  # noted, not raised, until held() ends
                started = True
        assert started
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


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
    assert proc.returncode in (1, 130), err
    assert "Traceback" not in err
    assert project.leftovers() == []


def test_a_signal_while_the_handlers_go_back_is_obeyed_and_leaves_none_of_ours(monkeypatch):
    from outreach import dryrun

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    real, restored = signal.signal, []

    def restoring(signum, handler):
        old = real(signum, handler)
        if not isinstance(handler, dryrun._Interrupts):
            restored.append(signum)
            if len(restored) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # lands between the two restores
        return old

    monkeypatch.setattr(signal, "signal", restoring)
    with pytest.raises(KeyboardInterrupt):
        with dryrun._interrupts():
            pass
    monkeypatch.undo()
    assert len(restored) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


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
@pytest.mark.parametrize("workers", ["1", "3"])
def test_audience_filters(project, outreach, monkeypatch, audience, expected, workers):
    monkeypatch.setenv("OUTREACH_WORKERS", workers)
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
    assert "rendered: 14 letters" in r.out and "skipped: 2" in r.out
    assert "line 16:" in r.out


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
