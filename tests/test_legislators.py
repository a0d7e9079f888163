"""Importing the official congress-legislators files into our format."""

from __future__ import annotations

import csv

from outreach.contacts import read_contacts


def rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_import_gives_100_senators_437_members_and_the_committee_codes(shared, tmp_path, outreach):
    up = shared / "congress" / "upstream"
    out = tmp_path / "members.csv"
    r = outreach("contacts", "import-legislators", up / "legislators-current.csv",
                 "--committees", up / "committee-membership-current.csv", "--out", out)
    # Members publish no addresses: every one is listed and the exit says so.
    assert r.code == 1
    assert "100 senators, 437 House members" in r.out
    ours = rows(out)
    assert sum(r["chamber"] == "senate" for r in ours) == 100
    assert sum(r["chamber"] == "house" for r in ours) == 437
    reference = {r["bioguide_id"]: set(filter(None, r["committees"].split(";")))
                 for r in rows(shared / "congress" / "contacts-congress.csv")}
    imported = {r["bioguide_id"]: set(filter(None, r["committees"].split(";"))) for r in ours}
    assert imported == reference
    # Members with no official full name get one built from their parts, not a nickname.
    by_id = {r["bioguide_id"]: r for r in ours}
    assert by_id["M001246"]["full_name"] == "Analilia Mejia"
    assert by_id["M001219"]["first_name"] == "James (Jim)"


def test_import_with_emails_then_checks_clean(shared, tmp_path, outreach):
    up = shared / "congress" / "upstream"
    emails = tmp_path / "emails.csv"
    ref = rows(shared / "congress" / "contacts-congress.csv")
    with open(emails, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bioguide_id", "email"])
        for r in ref[:-1]:
            w.writerow([r["bioguide_id"], r["email"]])
    out = tmp_path / "members.csv"
    r = outreach("contacts", "import-legislators", up / "legislators-current.csv",
                 "--committees", up / "committee-membership-current.csv", "--emails", emails, "--out", out)
    assert r.code == 1
    assert "1 member has no email yet" in r.out and ref[-1]["bioguide_id"] in r.out
    result = read_contacts(out)
    assert len(result.contacts) == 536
    assert [p.column for p in result.problems] == ["email"]


def test_import_of_a_wrong_file_is_one_line(tmp_path, outreach):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    r = outreach("contacts", "import-legislators", wrong, "--out", tmp_path / "o.csv")
    assert r.code == 2 and "column" in r.err and "missing" in r.err
    assert "Traceback" not in r.err


def test_from_the_official_yaml_one_current_speaker_greeted_as_such_and_the_chairs_by_title(
        shared, tmp_path, outreach):
    from conftest import ROOT
    from outreach.config import Sender
    from outreach.letters import TemplateSet

    up = shared / "congress" / "upstream"
    emails = tmp_path / "emails.csv"
    with open(emails, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bioguide_id", "email"])
        for r in rows(shared / "congress" / "contacts-congress.csv"):
            w.writerow([r["bioguide_id"], r["email"]])
    out = tmp_path / "members.csv"
    r = outreach("contacts", "import-legislators", up / "legislators-current.yaml",
                 "--committees", up / "committee-membership-current.yaml", "--emails", emails, "--out", out)
    assert r.code == 0, r.err
    ours = {row["bioguide_id"]: row for row in rows(out)}
    # leadership_roles keeps past roles too (Nancy Pelosi was Speaker twice): only today's count.
    speakers = [b for b, row in ours.items() if "Speaker of the House" in row["leadership"].split("; ")]
    assert speakers == ["J000299"]
    assert ours["P000197"]["leadership"] == ""
    assert ours["W000437"]["committee_roles"].split(";").count("SSAS=Chairman") == 1

    letters = TemplateSet(ROOT / "templates" / "korea-exception",
                          Sender(name="Jordan Organizer", email="jordan@advocacy.example.org"), "korea-exception")
    by_id = {c.bioguide_id: c for c in read_contacts(out).contacts}
    text = {b: letters.render(by_id[b]).text for b in ("J000299", "P000197", "W000437", "R000122", "M001137")}
    assert "The Honorable Mike Johnson\nSpeaker of the House\nU.S. House of Representatives\n" in text["J000299"]
    assert "\nDear Mr. Speaker:\n" in text["J000299"]
    assert "\nDear Representative Pelosi:\n" in text["P000197"] and "Speaker" not in text["P000197"]
    assert "\nDear Chairman Wicker:\n" in text["W000437"]
    assert "Chairman, Senate Armed Services Committee" in text["W000437"]
    assert "\nDear Ranking Member Reed:\n" in text["R000122"]
    assert "\nDear Ranking Member Meeks:\n" in text["M001137"]
    assert "As Ranking Member of the House Foreign Affairs Committee" in " ".join(text["M001137"].split())
