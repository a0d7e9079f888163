"""The campaign run, through the library with the in-memory transport: one way through for every mode."""

from __future__ import annotations

import csv
import email
import email.policy

import pytest

from outreach.config import load_config
from outreach.errors import UserError
from outreach.ledger import Ledger
from outreach.run import DRY_RUN, LIVE, PREVIEW, RETRY, TEST, CampaignRun, Request
from outreach.transports import SendResult
from outreach.transports.memory import MemoryTransport

SAMPLE_ORDER = ["S001198", "W000437", "K000384", "S001181", "R000584", "L000570", "R000575", "S000510",
                "M001199", "M001137", "M001219", "R000600", "H001103", "N000147"]   # contacts/sample.csv


def ready_to_send(project, delivery: str = "") -> None:
    """The sample project with a real-looking sender (a live run refuses the sample one), fast."""
    text = project.config.read_text().replace("jordan@advocacy.example.org", "jordan@mine-ban-advocates.org")
    project.config.write_text(text.replace("[delivery]", f"[delivery]\nrate_per_minute = 60000\n{delivery}"))


@pytest.fixture
def cfg(project):
    ready_to_send(project)
    return load_config(project.config)


def ledger(cfg) -> Ledger:
    return Ledger(cfg.database_url)


def live(cfg, limit=None, transport=None, **kw):
    transport = transport or MemoryTransport()
    summary = CampaignRun(cfg, Request(LIVE, limit=limit), transport=transport, **kw).execute()
    return summary, transport


def bioguides(messages) -> list[str]:
    return [m.bioguide_id for m in messages]


def dry_run_order(project, cfg, limit) -> list[str]:
    summary = CampaignRun(cfg, Request(DRY_RUN, limit=limit)).execute()
    with open(f"{summary.where}/manifest.csv", encoding="utf-8") as f:
        return [row["bioguide_id"] for row in csv.DictReader(f)]


def preview_order(cfg, limit) -> list[str]:
    return [letter.contact.bioguide_id for letter in CampaignRun(cfg, Request(PREVIEW, limit=limit)).prepare().letters]


# -- one order everywhere ----------------------------------------------------------------------

def test_preview_dry_run_and_live_choose_the_same_recipients_on_a_fresh_ledger(project, cfg):
    expected = SAMPLE_ORDER[:3]
    assert preview_order(cfg, 3) == expected
    assert dry_run_order(project, cfg, 3) == expected
    _, sent = live(cfg, limit=3)
    assert sorted(bioguides(sent.sent)) == sorted(expected)  # three in flight at once


def test_they_choose_the_same_recipients_after_a_partial_live_send(project, cfg):
    live(cfg, limit=2)
    expected = SAMPLE_ORDER[2:5]
    assert preview_order(cfg, 3) == expected
    assert dry_run_order(project, cfg, 3) == expected
    _, sent = live(cfg, limit=3)
    assert sorted(bioguides(sent.sent)) == sorted(expected)


def test_limit_takes_the_contact_lists_order_across_runs_to_the_end(cfg):
    # Within a run several letters are in flight at once: each run's set is what is chosen.
    for start in range(0, 15, 3):
        _, sent = live(cfg, limit=3)
        assert sorted(bioguides(sent.sent)) == sorted(SAMPLE_ORDER[start:start + 3])


def test_a_dry_run_changes_nothing_that_a_live_run_sends(project, cfg):
    CampaignRun(cfg, Request(DRY_RUN)).execute()
    CampaignRun(cfg, Request(DRY_RUN, limit=4)).execute()
    summary, sent = live(cfg)
    assert sorted(bioguides(sent.sent)) == sorted(SAMPLE_ORDER) and summary.dispatched.accepted == 14


def test_the_dry_run_writes_exactly_the_messages_the_live_run_sends(project, cfg):
    dry = CampaignRun(cfg, Request(DRY_RUN)).execute()
    _, sent = live(cfg)
    with open(f"{dry.where}/manifest.csv", encoding="utf-8") as f:
        files = {row["letter_id"]: row["file"] for row in csv.DictReader(f)}
    assert sorted(files) == sorted(m.letter_id for m in sent.sent)
    for message in sent.sent:
        raw = open(f"{dry.where}/{files[message.letter_id]}", "rb").read()
        eml = email.message_from_bytes(raw, policy=email.policy.default)
        assert eml["Subject"] == message.subject and eml["To"].addresses[0].addr_spec == message.to_email
        assert eml.get_body(("plain",)).get_content() == message.text
        assert eml.get_body(("html",)).get_content() == message.html


def test_a_dry_run_after_a_live_send_leaves_out_who_already_has_a_letter(project, cfg, outreach):
    live(cfg, limit=3)
    r = outreach("--config", project.config, "send")
    assert r.code == 0, r.err
    assert "already have a letter: 3 (3 accepted): not written again" in r.out
    assert "rendered: 11 letters" in r.out
    [run] = project.runs()
    with open(run / "manifest.csv", encoding="utf-8") as f:
        assert [row["bioguide_id"] for row in csv.DictReader(f)] == SAMPLE_ORDER[3:]


# -- the stages ----------------------------------------------------------------------------------

def test_a_template_error_stops_a_live_run_before_anything_is_recorded_or_sent(project, cfg, tmp_path):
    import shutil

    from conftest import ROOT

    templates = tmp_path / "t"
    shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    (templates / "letter.txt.j2").write_text("{% if member.state == 'GU' %}{{ nope }}{% endif %}\n")
    project.write_config(templates=templates)
    ready_to_send(project)
    cfg = load_config(project.config)
    transport = MemoryTransport()
    with pytest.raises(UserError, match="nope"):
        CampaignRun(cfg, Request(LIVE, limit=1), transport=transport).execute()
    assert transport.sent == [] and transport.preflights == []
    assert ledger(cfg).letters.counts(ledger(cfg).campaigns.id("korea-exception", create=False)) \
        == ledger(cfg).letters.counts(None)


def test_a_refused_preflight_records_and_sends_nothing(cfg):
    transport = MemoryTransport(refuse_preflight="key refused")
    with pytest.raises(UserError, match="key refused"):
        CampaignRun(cfg, Request(LIVE), transport=transport).execute()
    assert transport.sent == [] and len(transport.preflights) == 1
    assert ledger(cfg).campaigns.id("korea-exception", create=False) in (None,) or \
        sum(ledger(cfg).letters.counts(ledger(cfg).campaigns.id("korea-exception")).values()) == 0


def test_declining_the_confirmation_records_nothing(cfg):
    asked = []
    transport = MemoryTransport()
    summary = CampaignRun(cfg, Request(LIVE), transport=transport).execute(confirm=lambda lines: asked.append(lines))
    assert asked and any("this run sends: 14 letters" in line for line in asked[0])
    assert transport.sent == [] and not summary.confirmed and summary.exit_code == 0
    assert sum(ledger(cfg).letters.counts(ledger(cfg).campaigns.id("korea-exception")).values()) == 0


def test_a_live_run_records_every_letter_still_to_send_and_sends_the_chosen(cfg):
    summary, sent = live(cfg, limit=4)
    counts = summary.counts
    assert (counts["accepted"], counts["pending"]) == (4, 10) and summary.exit_code == 1
    assert summary.dispatched.accepted == 4 and len(sent.sent) == 4


def test_a_stop_mid_run_sends_no_new_letter_and_leaves_none_sending(cfg):
    run = None

    def answer(message, n):
        if n == 4:
            run.stop("interrupted")
        return SendResult("accepted", 202, message_id=f"m{n}")

    transport = MemoryTransport(answer)
    run = CampaignRun(cfg, Request(LIVE), transport=transport)
    summary = run.execute()
    assert summary.dispatched.stopped == "interrupted" and 5 <= len(transport.sent) < 14
    counts = summary.counts
    assert counts["sending"] == 0 and counts["accepted"] == len(transport.sent)
    assert counts["pending"] == 14 - len(transport.sent)
    _, rest = live(cfg)
    assert len(rest.sent) == 14 - len(transport.sent)


def test_a_retried_letter_goes_out_from_its_archive_not_a_fresh_render(project, tmp_path):
    """Refused once, then the template changed: --retry-failed sends what was archived."""
    import shutil

    from conftest import ROOT

    templates = tmp_path / "t"
    shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    project.write_config(templates=templates)
    ready_to_send(project, "max_attempts = 1")
    cfg = load_config(project.config)
    refused = MemoryTransport(lambda m, n: SendResult("failed", 400, error="HTTP 400: Invalid reply_to"))
    summary, _ = live(cfg, limit=1, transport=refused)
    assert summary.counts["failed"] == 1
    (templates / "subject.txt.j2").write_text("A new subject\n")
    again = MemoryTransport()
    done = CampaignRun(cfg, Request(RETRY, live=True), transport=again).execute()
    assert [m.subject for m in again.sent] == [refused.sent[0].subject] != ["A new subject"]
    assert [m.text for m in again.sent] == [refused.sent[0].text]
    assert done.counts["failed"] == 0 and done.counts["accepted"] == 1


def test_test_copies_go_to_our_address_and_record_nothing(cfg):
    transport = MemoryTransport()
    summary = CampaignRun(cfg, Request(TEST, to=("K000384",), test_to="jordan@mine-ban-advocates.org"),
                          transport=transport).execute()
    [message] = transport.sent
    assert message.to_email == "jordan@mine-ban-advocates.org" and message.subject.startswith("[TEST] ")
    assert message.is_test and summary.exit_code == 0 and summary.tests[0][1].outcome == "accepted"
    assert ledger(cfg).campaigns.id("korea-exception", create=False) is None


def test_test_copies_to_an_office_are_refused(cfg):
    with pytest.raises(UserError, match="not one of your own addresses"):
        CampaignRun(cfg, Request(TEST, test_to="timothy.kaine@senate.example.org"),
                    transport=MemoryTransport()).execute()


# -- found in review: each failed on the first version of the run --------------------------------------------

def test_a_test_copy_of_a_letter_sent_before_goes_to_our_address_never_the_office(cfg):
    live(cfg, limit=1)                                        # Dan Sullivan's letter is accepted
    transport = MemoryTransport()
    CampaignRun(cfg, Request(TEST, to=("S001198",), test_to="jordan@mine-ban-advocates.org"),
                transport=transport).execute()
    [copy] = transport.sent
    assert copy.to_email == "jordan@mine-ban-advocates.org" and copy.subject.startswith("[TEST] ") and copy.is_test


def test_a_test_copy_of_a_released_letter_leaves_it_to_send_once(cfg):
    transport = MemoryTransport(lambda m, n: SendResult("unknown", error="no answer"))
    live(cfg, limit=1, transport=transport)
    led = ledger(cfg)
    assert led.letters.release(led.campaigns.id("korea-exception"), all_unknown=True)
    copies = MemoryTransport()
    CampaignRun(cfg, Request(TEST, test_to="jordan@mine-ban-advocates.org"), transport=copies).execute()
    assert [m.to_email for m in copies.sent] == ["jordan@mine-ban-advocates.org"]
    _, sent = live(cfg)
    assert sorted(m.to_email for m in sent.sent).count("dan.sullivan@senate.example.org") == 1


def test_test_copies_still_go_once_everyone_has_a_letter_and_count_their_last_answer(cfg):
    live(cfg)
    answers = iter([SendResult("retry", 503, error="HTTP 503"), SendResult("accepted", 202)])
    transport = MemoryTransport(lambda m, n: next(answers))
    summary = CampaignRun(cfg, Request(TEST, test_to="jordan@mine-ban-advocates.org"), transport=transport,
                          rng=lambda: 0.0).execute()
    assert len(transport.sent) == 2 and [r.outcome for _, r in summary.tests] == ["accepted"]
    assert summary.exit_code == 0


def test_a_run_with_nothing_to_send_still_skips_who_was_suppressed_since(cfg):
    live(cfg, limit=13)
    led = ledger(cfg)
    last = next(r for r in led.letters.listing() if r.status == "pending")
    led.suppressions.add(last.email, "manual", "asked")
    summary, sent = live(cfg)
    assert sent.sent == [] and summary.counts["pending"] == 0 and summary.counts["skipped"] == 1
    assert summary.exit_code == 0


def test_a_stop_before_anything_is_sent_says_so_and_writes_nothing(project, cfg):
    run = CampaignRun(cfg, Request(DRY_RUN))
    run.stop("interrupted")
    summary = run.execute()
    assert summary.stopped == "interrupted" and summary.dispatched is None and summary.exit_code == 130
    assert project.runs() == [] and project.leftovers() == []
    transport = MemoryTransport()
    run = CampaignRun(cfg, Request(LIVE), transport=transport)
    run.stop("interrupted")
    assert run.execute().exit_code == 130 and transport.sent == [] and transport.preflights == []
