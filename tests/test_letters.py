"""Forms of address and the letters themselves: correct titles, the facts in DESIGN.md and nothing else."""

from __future__ import annotations

import csv
import email
import email.policy
import re
from html import unescape

import pytest

from conftest import ROOT
from outreach.config import Sender
from outreach.contacts import read_contacts
from outreach.forms import member_for, title_for
from outreach.letters import TemplateSet, letter_id, wrap

SENDER = Sender(name="Jordan Organizer", email="jordan@advocacy.example.org", organization="Advocacy Network",
                address="1 Main Street, Springfield", phone="555-0100")
TEMPLATES = ROOT / "templates" / "korea-exception"


def contact_from(tmp_path, header: str, row: str):
    path = tmp_path / "c.csv"
    path.write_text(f"{header}\n{row}\n", encoding="utf-8")
    result = read_contacts(path)
    assert not result.problems, result.problems
    return result.contacts[0]


@pytest.mark.parametrize("chamber,state,title", [
    ("senate", "AK", "Senator"), ("house", "AL", "Representative"), ("house", "DC", "Delegate"),
    ("house", "AS", "Delegate"), ("house", "GU", "Delegate"), ("house", "MP", "Delegate"),
    ("house", "VI", "Delegate"), ("house", "PR", "Resident Commissioner"),
])
def test_titles(chamber, state, title):
    assert title_for(chamber, state) == title


def test_salutation_uses_the_official_name_never_a_nickname(tmp_path):
    header = "email,first_name,last_name,full_name,chamber,state,district"
    m = member_for(contact_from(tmp_path, header, "j@h.example.org,James (Jim),Moylan,James C. Moylan,house,GU,0"))
    assert (m.honorific, m.salutation) == ("The Honorable James C. Moylan", "Dear Delegate Moylan")
    m = member_for(contact_from(tmp_path, header, "j@h.example.org,J.,Hill,J. French Hill,house,AR,2"))
    assert m.salutation == "Dear Representative Hill"
    assert m.constituency == "Arkansas's 2nd congressional district"
    # No official full name: built from first and last name without the nickname.
    m = member_for(contact_from(tmp_path, header, "j@h.example.org,Zachary (Zach),Nunn,,house,IA,3"))
    assert m.honorific == "The Honorable Zachary Nunn"
    m = member_for(contact_from(tmp_path, header, "p@h.example.org,Pablo José,Hernández Rivera,Pablo José Hernández,house,PR,0"))
    assert m.salutation == "Dear Resident Commissioner Hernández Rivera"


def test_wrap_keeps_lines_within_72_columns():
    text = "word " * 60 + "supercalifragilisticexpialidocious " * 3
    assert all(len(line) <= 72 for line in wrap(text).splitlines())
    hung = wrap("a " * 80, hang=5).splitlines()
    assert all(line.startswith("     ") for line in hung[1:]) and all(len(line) <= 72 for line in hung)


def test_letter_id_is_stable_per_campaign_and_recipient():
    assert letter_id("c", "A@B.org") == letter_id("c", "a@b.org")
    assert letter_id("c", "a@b.org") != letter_id("d", "a@b.org")


def test_html_escapes_contact_data_and_text_keeps_it(tmp_path):
    header = "email,full_name,last_name,chamber,state,district,staffer"
    c = contact_from(tmp_path, header, 'x@h.example.org,Tom <b>&</b> Jones,Jones,house,AL,1,"Ann ""A&B"" Lee"')
    letter = TemplateSet(TEMPLATES, SENDER, "korea-exception").render(c)
    assert "Tom &lt;b&gt;&amp;&lt;/b&gt; Jones" in letter.html and "<b>" not in letter.html
    assert "The Honorable Tom <b>&</b> Jones" in letter.text
    assert 'Attention: Ann "A&B" Lee' in letter.text


# -- the letters over the whole Congress ---------------------------------------------

@pytest.fixture(scope="module")
def congress_letters(shared):
    contacts = read_contacts(shared / "congress" / "contacts-congress.csv").contacts
    templates = TemplateSet(TEMPLATES, SENDER, "korea-exception")
    return [(c, templates.render(c)) for c in contacts]


@pytest.fixture(scope="module")
def memberships(shared):
    with open(shared / "congress" / "committee-memberships.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {code: {r["bioguide_id"] for r in rows if r["committee_id"] == code}
            for code in ("SSAS", "SSFR", "HSAS", "HSFA")}


def test_committee_paragraphs_appear_exactly_for_their_members(congress_letters, memberships):
    armed = memberships["SSAS"] | memberships["HSAS"]
    foreign = memberships["SSFR"] | memberships["HSFA"]
    for contact, letter in congress_letters:
        for text in (letter.text, letter.html):
            flat = " ".join(text.split())
            assert ("high fidelity modeling and simulation effort" in flat) == (contact.bioguide_id in armed)
            assert ("more than one billion dollars" in flat) == (contact.bioguide_id in armed)
            assert ("Foreign Relations Committee" in flat or "Foreign Affairs Committee" in flat) \
                == (contact.bioguide_id in foreign), contact.full_name
            assert ("advice and consent of the Senate" in flat) == (contact.chamber == "senate")


def test_every_letter_makes_the_case_and_the_asks(congress_letters):
    for _, letter in congress_letters:
        flat = " ".join(letter.text.split())
        assert "end the Korea exception" in flat
        assert "support U.S. accession to the Mine Ban Treaty" in flat
        assert "vote in favor of the annual UN General Assembly resolution" in flat
        assert "not used antipersonnel mines since 1991" in flat
        assert "Jordan Organizer" in letter.text and "Advocacy Network" in letter.text
        assert all(len(line) <= 72 for line in letter.text.splitlines() if "Office Building" not in line)


def test_delegates_and_the_resident_commissioner_are_addressed_correctly(congress_letters):
    seen = {}
    for contact, letter in congress_letters:
        if contact.state in ("DC", "AS", "GU", "MP", "VI", "PR"):
            seen[contact.state] = letter.text
            title = "Resident Commissioner" if contact.state == "PR" else "Delegate"
            assert f"Dear {title} {contact.last_name}:" in letter.text
            assert f"The Honorable {contact.full_name}" in letter.text
            assert "Dear Representative" not in letter.text and "Senator" not in letter.text
    assert sorted(seen) == ["AS", "DC", "GU", "MP", "PR", "VI"]


def test_no_nickname_first_name_reaches_a_letter(congress_letters):
    for contact, letter in congress_letters:
        if "(" in contact.first_name:  # 'James (Jim)'
            assert contact.first_name not in letter.text and contact.first_name not in letter.html
        title = member_for(contact).title
        assert f"Dear {title} {contact.last_name}:" in letter.text


FACT_NUMBERS = {"2014", "1997", "1991"}  # the only figures DESIGN.md gives, besides "one billion"


def test_no_letter_names_a_year_figure_or_fact_beyond_design_and_contact_data(congress_letters):
    sender_numbers = set(re.findall(r"\d+", " ".join(filter(None, vars(SENDER).values()))))
    for contact, letter in congress_letters:
        allowed = FACT_NUMBERS | sender_numbers | set(re.findall(r"\d+", " ".join(contact.fields.values())))
        html = unescape(re.sub(r"<[^>]+>", " ", letter.html))
        text_without_list_markers = re.sub(r"(?m)^\s+\d\. ", "", letter.text)
        for text in (text_without_list_markers, html, letter.subject):
            text = " ".join(text.split())
            numbers = set(re.findall(r"\d+", text))
            assert numbers <= allowed, (contact.full_name, numbers - allowed)
            words = re.findall(r"\b(hundred|thousand|million|billion|trillion|percent|H\.R\.|S\. ?\d)\b", text)
            assert words in ([], ["billion"]), words
            assert "one billion" in text or "billion" not in text


def test_messages_built_for_the_whole_congress_parse(congress_letters):
    from outreach.message import message_for, to_eml

    for contact, letter in congress_letters:
        msg = email.message_from_bytes(to_eml(message_for(letter, SENDER, "korea-exception")),
                                       policy=email.policy.default)
        assert msg["To"].addresses[0].addr_spec == contact.email
        assert msg["To"].addresses[0].display_name == contact.full_name
        assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == letter.text
        assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == letter.html
