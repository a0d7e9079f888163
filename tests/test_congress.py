"""A new Congress: lists built from the official files, refreshed when they go stale, and live sends
that never reach a member whose term has ended. Real data: ../shared/congress/history/2024-12-18
(the 118th Congress's last days) against ../shared/congress/upstream (15 June 2026)."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import shutil
import threading

import pytest

from conftest import ROOT, assert_no_traceback, free_port
from mockgrid import MockGrid
from test_live import KEY, campaign_letters, write_live_config

MOVED_CHAMBER = {"B001303", "B001299", "G000574", "S001208", "C001114"}   # House to Senate, 2025


@pytest.fixture(scope="module")
def snapshots(shared):
    old, new = shared / "congress" / "history" / "2024-12-18", shared / "congress" / "upstream"
    return old, new


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def yaml_of(path):
    import yaml

    with open(path, "rb") as f:
        return yaml.load(f, Loader=yaml.CSafeLoader)


@pytest.fixture
def stale_list(snapshots, tmp_path, outreach, monkeypatch):
    """The organisation's list as built in December 2024 (from the YAML), with its own columns filled:
    an email, a staffer and a notes column of its own."""
    old, _ = snapshots
    monkeypatch.setenv("OUTREACH_NOW", "2024-12-18T12:00:00-05:00")
    members = [m["id"]["bioguide"] for m in yaml_of(old / "legislators-current.yaml")]
    emails = tmp_path / "emails.csv"
    emails.write_text("bioguide_id,email\n" + "".join(f"{b},office-{b.lower()}@congress.example.org\n"
                                                       for b in members))
    built = tmp_path / "members-2024.csv"
    r = outreach("contacts", "import-legislators", old / "legislators-current.yaml", "--committees",
                 old / "committee-membership-current.yaml", "--emails", emails, "--out", built, cwd=tmp_path)
    assert r.code == 0, r.err
    assert "536 members (100 senators, 436 House members)" in r.out
    rows = read_csv(built)
    for row in rows:
        row["staffer"] = f"Staffer for {row['last_name']}"
        row["notes"] = f"met {row['bioguide_id']} in 2024"
    with open(built, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    monkeypatch.setenv("OUTREACH_NOW", "2026-06-15T12:00:00-04:00")
    return built


def committee_members(path, code: str) -> set[str]:
    return {seat["bioguide"] for seat in yaml_of(path)[code]}


def test_a_2024_list_refreshed_against_2026_says_what_changed_and_keeps_our_columns(
        stale_list, snapshots, tmp_path, outreach):
    old, new = snapshots
    refreshed = tmp_path / "members-2026.csv"
    r = outreach("contacts", "refresh", stale_list, "--legislators", new / "legislators-current.yaml",
                 "--committees", new / "committee-membership-current.yaml", "--out", refreshed, "--json")
    assert r.code == 1, r.err  # the list was out of date
    report = json.loads(r.out)
    assert (len(report["left"]), len(report["new"]), len(report["seat"]), len(report["party"]),
            len(report["address"]), report["stayed"]) == (80, 81, 9, 1, 149, 456)
    assert {s["bioguide_id"] for s in report["needs_review"]} == MOVED_CHAMBER
    assert report["party"] == [{"bioguide_id": "K000401", "name": "Kevin Kiley", "seat": "CA-3",
                                "old": "Republican", "new": "Independent"}]
    # Committee by committee, exactly the data's own difference.
    stayed_or_new = {m["id"]["bioguide"] for m in yaml_of(new / "legislators-current.yaml")}
    for code in ("SSAS", "SSFR", "HSAS", "HSFA"):
        before = committee_members(old / "committee-membership-current.yaml", code)
        after = committee_members(new / "committee-membership-current.yaml", code) & stayed_or_new
        moves = report["committees"][code]
        assert {o["bioguide_id"] for o in moves["joined"]} == after - before, code
        assert {o["bioguide_id"] for o in moves["left"]} == before - after, code
    # The refreshed list: departed rows gone, our columns kept, official ones from 2026.
    before = {row["bioguide_id"]: row for row in read_csv(stale_list)}
    after = {row["bioguide_id"]: row for row in read_csv(refreshed)}
    assert len(after) == 537 and not {d["bioguide_id"] for d in report["left"]} & set(after)
    terms = {m["id"]["bioguide"]: m["terms"][-1]["end"] for m in yaml_of(new / "legislators-current.yaml")}
    stayed = set(before) & set(after)
    assert len(stayed) == 456
    for b in stayed:
        assert (after[b]["email"], after[b]["staffer"], after[b]["notes"]) == \
            (before[b]["email"], before[b]["staffer"], before[b]["notes"]), b
        assert after[b]["term_end"] == terms[b]
        assert bool(after[b]["needs_review"]) == (b in MOVED_CHAMBER)
    assert after["S001208"]["chamber"] == "senate" and "moved from the House to the Senate" in \
        after["S001208"]["needs_review"]
    fresh = set(after) - set(before)
    assert len(fresh) == 81 and all(after[b]["email"] == "" and after[b]["term_end"] == terms[b] for b in fresh)
    assert after["K000401"]["party"] == "Independent"


def test_the_csv_forms_work_too_and_say_what_they_cannot_update(stale_list, snapshots, outreach):
    _, new = snapshots
    r = outreach("contacts", "refresh", stale_list, "--legislators", new / "legislators-current.csv",
                 "--committees", new / "committee-membership-current.csv")
    assert r.code == 1 and "left Congress: 80" in r.out and "new members with no row in the list: 81" in r.out
    assert r.out.count("note: the CSV form has no term dates or leadership roles") == 1


def test_a_row_without_a_bioguide_id_is_matched_by_name_and_state_or_listed(stale_list, snapshots, tmp_path,
                                                                              outreach):
    _, new = snapshots
    text = stale_list.read_text().splitlines()
    header = text[0].split(",")
    at = header.index("bioguide_id")
    kaine = next(i for i, line in enumerate(text) if line.startswith("K000384,"))
    text[kaine] = "," + text[kaine].split(",", 1)[1]                      # Tim Kaine, VA: one match
    text.append(",Nobody,Known,,Nobody Known,senate,VA" + "," * (len(header) - 7))
    assert at == 0
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join(text) + "\n")
    r = outreach("contacts", "refresh", edited, "--legislators", new / "legislators-current.yaml", "--json")
    report = json.loads(r.out)
    assert [m["bioguide_id"] for m in report["matched_by_name"]] == ["K000384"]
    assert [u["name"] for u in report["unmatched"]] == ["Nobody Known"]


# -- --download ---------------------------------------------------------------------------------------

@pytest.fixture
def publication(snapshots):
    """The dataset's publication, served by a local HTTP server."""
    _, new = snapshots
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(new))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_fetches_the_current_files_into_the_cache(project, publication, outreach, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    project.config.write_text(project.config.read_text() + f'\n[legislators]\nbase_url = "{publication}"\n')
    out = tmp_path / "members.csv"
    r = outreach("--config", project.config, "contacts", "import-legislators", "--download", "--out", out)
    assert r.code == 1 and "537 members (100 senators, 437 House members)" in r.out, r.err
    cached = tmp_path / "cache" / "outreach" / "congress-legislators"
    assert sorted(p.name for p in cached.iterdir()) == ["committee-membership-current.yaml",
                                                        "legislators-current.yaml"]
    rows = read_csv(out)
    assert all(row["term_end"] for row in rows) and any("SSAS" in row["committees"] for row in rows)
    r = outreach("--config", project.config, "contacts", "refresh", out, "--download")
    assert r.code == 0 and "the list is up to date" in r.out and "left Congress: 0" in r.out
    assert "downloading" not in r.err  # no progress lines off a terminal for a few hundred kilobytes


def test_download_offline_is_one_line_and_exit_2(project, outreach, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    project.config.write_text(project.config.read_text() +
                              f'\n[legislators]\nbase_url = "http://127.0.0.1:{free_port()}"\n')
    r = outreach("--config", project.config, "contacts", "import-legislators", "--download", "--out",
                 tmp_path / "m.csv")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "could not download" in r.err
    assert "offline?" in r.err and not (tmp_path / "m.csv").exists()
    assert_no_traceback(r)


# -- the guard: a live send never reaches a member whose term has ended ------------------------------------

def with_terms(project, ends: dict[str, str], default: str = "2031-01-03") -> None:
    rows = read_csv(ROOT / "contacts" / "sample.csv")
    for row in rows:
        row["term_end"] = ends.get(row["bioguide_id"], default)
    with open(project.root / "contacts.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


ENDED = {"S001198": "2027-01-03", "M001219": "2027-01-03"}   # Dan Sullivan, James Moylan


def test_a_live_send_after_a_term_ended_skips_those_members_until_a_refresh_renews_them(
        project, outreach, monkeypatch, snapshots, tmp_path):
    import yaml

    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    # The official data after the election: both re-elected, their new terms in the YAML.
    members = yaml_of(snapshots[1] / "legislators-current.yaml")
    for m in members:
        if m["id"]["bioguide"] in ENDED:
            m["terms"].append({**m["terms"][-1], "start": "2027-01-03", "end": "2033-01-03"})
    renewed = tmp_path / "legislators-current.yaml"
    renewed.write_text(yaml.safe_dump(members, allow_unicode=True))
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        with_terms(project, ENDED)
        monkeypatch.setenv("OUTREACH_NOW", "2027-01-03T11:59:00-05:00")   # a minute before noon: still in office
        assert "term ended" not in outreach("--config", project.config, "preview", "--limit", "14").err
        monkeypatch.setenv("OUTREACH_NOW", "2027-01-03T12:00:00-05:00")   # noon Eastern: the term is over
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert r.code == 0, r.out + r.err
        assert "term ended: 2 recipients left out" in r.out
        sent = {d.to for d in grid.deliveries()}
        assert len(sent) == 12 and not {"dan.sullivan@senate.example.org", "james.moylan@house.example.org"} & sent
        rows = {row.email: row for row in campaign_letters(project)}
        assert rows["dan.sullivan@senate.example.org"].status == "skipped"
        assert rows["dan.sullivan@senate.example.org"].reason == \
            "term ended 2027-01-03; run `outreach contacts refresh`"
        # Re-elected: the refreshed list gives them their new term, and their letters go out after all.
        refreshed = project.root / "contacts-120th.csv"
        r = outreach("contacts", "refresh", project.root / "contacts.csv", "--legislators", renewed, "--out", refreshed)
        assert r.code == 1 and refreshed.exists(), r.err
        assert {row["bioguide_id"]: row["term_end"] for row in read_csv(refreshed)
                if row["bioguide_id"] in ENDED} == dict.fromkeys(ENDED, "2033-01-03")
        project.config.write_text(project.config.read_text().replace('contacts = "contacts.csv"',
                                                                     'contacts = "contacts-120th.csv"'))
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert r.code == 0, r.out + r.err
        assert sorted(d.to for d in grid.deliveries())[-14:] and len(grid.deliveries()) == 14
        assert max(grid.received.values()) == 1
    assert {row.status for row in campaign_letters(project)} == {"accepted"}


def test_letters_already_accepted_are_untouched_when_the_term_ends_and_the_report_marks_them(
        project, outreach, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        with_terms(project, ENDED)
        assert outreach("--config", project.config, "send", "--live", "--yes").code == 0
        monkeypatch.setenv("OUTREACH_NOW", "2027-02-01T09:00:00-05:00")
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert r.code == 0 and "Nothing to send" in r.out and len(grid.deliveries()) == 14
    assert {row.status for row in campaign_letters(project)} == {"accepted"}
    data = json.loads(outreach("--config", project.config, "report", "--format", "json").out)
    assert data["summary"]["terms_ended"] == 2 and data["summary"]["terms_ended_by"] == "2027-01-31"  # before noon
    ended = {row["bioguide_id"] for row in data["letters"] if row["term_ended"]}
    assert ended == set(ENDED)
    csv_out = outreach("--config", project.config, "report", "--format", "csv").out
    assert sum(1 for row in csv.DictReader(csv_out.splitlines()) if row["term_ended"] == "yes") == 2
    html = outreach("--config", project.config, "report", "--format", "html").out
    assert 'data-terms-ended="2"' in html and html.count('class="ended">term ended 2027-01-03') == 2
    table = outreach("--config", project.config, "report").out
    assert "2 offices' terms have ended" in table and table.count("[term ended] 2027-01-03") == 2


def test_a_dry_run_and_a_preview_say_it_in_one_line(project, outreach, monkeypatch):
    with_terms(project, ENDED)
    monkeypatch.setenv("OUTREACH_NOW", "2027-01-04T09:00:00-05:00")
    for command in (("send",), ("preview", "--limit", "20")):
        r = outreach("--config", project.config, *command)
        assert r.err.count("2 recipients of korea-exception have a term that has ended") == 1, r.err
    [run] = project.runs()
    assert len(read_csv(run / "manifest.csv")) == 12


def test_a_live_send_from_a_list_without_term_end_suggests_a_refresh(project, outreach, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        r = outreach("--config", project.config, "send", "--live", "--yes")
    assert r.code == 0
    assert (r.out + r.err).count("has no term_end column") == 1 and "outreach contacts refresh" in r.out


def test_contacts_check_reads_term_end(project, outreach):
    with_terms(project, {"S001198": "3 January 2027"})
    r = outreach("contacts", "check", project.root / "contacts.csv")
    assert r.code == 1
    assert "line 2, column term_end: '3 January 2027' not a date like 2027-01-03" in r.out
    shutil.copy(ROOT / "contacts" / "sample.csv", project.root / "contacts.csv")
    assert "no term_end column" in outreach("contacts", "check", project.root / "contacts.csv").out


def test_a_term_ends_at_noon_eastern_on_its_last_day():
    import datetime as dt

    from outreach.terms import EASTERN, term_over

    end = dt.date(2027, 1, 3)
    at = lambda h, m: dt.datetime(2027, 1, 3, h, m, tzinfo=EASTERN).timestamp()  # noqa: E731
    assert not term_over(end, at(11, 59)) and term_over(end, at(12, 0)) and not term_over(None, at(12, 0))
