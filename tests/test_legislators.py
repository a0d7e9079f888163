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
    assert "1 members have no email yet" in r.out and ref[-1]["bioguide_id"] in r.out
    result = read_contacts(out)
    assert len(result.contacts) == 536
    assert [p.column for p in result.problems] == ["email"]


def test_import_of_a_wrong_file_is_one_line(tmp_path, outreach):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    r = outreach("contacts", "import-legislators", wrong, "--out", tmp_path / "o.csv")
    assert r.code == 2 and "column" in r.err and "missing" in r.err
    assert "Traceback" not in r.err
