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
    # One name per person: the greeting's surname is the one the honorific's name ends with.
    m = member_for(contact_from(tmp_path, header, "p@h.example.org,Pablo José,Hernández Rivera,Pablo José Hernández,house,PR,0"))
    assert (m.honorific, m.salutation) == ("The Honorable Pablo José Hernández", "Dear Resident Commissioner Hernández")
    m = member_for(contact_from(tmp_path, header, "w@h.example.org,Debbie,Wasserman Schultz,Debbie Wasserman Schultz,house,FL,25"))
    assert m.salutation == "Dear Representative Wasserman Schultz"
    # No quoted nickname in the inside address, straight or curly quotes alike.
    for full in ('Henry C. ""Hank"" Johnson, Jr.', "Henry C. “Hank” Johnson, Jr."):
        m = member_for(contact_from(tmp_path, header, f'h@h.example.org,Henry,Johnson,"{full}",house,GA,4'))
        assert (m.honorific, m.salutation) == ("The Honorable Henry C. Johnson, Jr.", "Dear Representative Johnson")


def test_the_speaker_chairs_and_ranking_members_and_a_rows_own_forms(tmp_path):
    header = "email,first_name,last_name,full_name,chamber,state,district,gender,leadership,committees,committee_roles"
    row = "m@h.example.org,Mike,Johnson,Mike Johnson,house,LA,4,{gender},{leadership},{committees},{roles}"

    def member(gender="M", leadership="", committees="", roles=""):
        return member_for(contact_from(tmp_path, header, row.format(gender=gender, leadership=leadership,
                                                                    committees=committees, roles=roles)))

    speaker = member(leadership="Speaker of the House")
    assert (speaker.salutation, speaker.honorific, speaker.position) == (
        "Dear Mr. Speaker", "The Honorable Mike Johnson", "Speaker of the House")
    assert member(gender="F", leadership="Speaker of the House").salutation == "Dear Madam Speaker"
    assert member(gender="", leadership="Speaker of the House").salutation == "Dear Speaker Johnson"
    # "Assistant Speaker of the House" is not the Speaker.
    assert member(leadership="Assistant Speaker of the House").salutation == "Dear Representative Johnson"
    chair = member(committees="HSAS;HSJU", roles="HSAS=Chair;HSJU=Ranking Member")
    assert (chair.salutation, chair.position) == ("Dear Chair Johnson", "Chair, House Armed Services Committee")
    ranking = member(committees="HSFA", roles="HSFA=Ranking Member")
    assert ranking.salutation == "Dear Ranking Member Johnson" and ranking.foreign_affairs_role == "Ranking Member"
    # A title on a committee the letter does not speak to, or one a greeting does not use, changes nothing.
    assert member(committees="HSJU", roles="HSJU=Chair").salutation == "Dear Representative Johnson"
    assert member(committees="HSAS", roles="HSAS=Vice Chair").salutation == "Dear Representative Johnson"
    # The list's own forms win.
    own = member_for(contact_from(tmp_path, header + ",salutation,honorific",
                                  "m@h.example.org,Mike,Johnson,Mike Johnson,house,LA,4,M,,,,"
                                  "Dear Congressman Johnson:,The Hon. Mike Johnson"))
    assert (own.salutation, own.honorific) == ("Dear Congressman Johnson", "The Hon. Mike Johnson")


def test_the_address_block_is_set_as_a_letter_has_it(tmp_path):
    header = "email,full_name,last_name,chamber,state,district,office_address"
    m = member_for(contact_from(tmp_path, header, "s@s.example.org,Dan Sullivan,Sullivan,senate,AK,,"
                                                  "706 Hart Senate Office Building Washington DC 20510"))
    assert m.address_lines == ("706 Hart Senate Office Building", "Washington, DC 20510")
    m = member_for(contact_from(tmp_path, header, 'r@h.example.org,Al Green,Green,house,TX,9,'
                                                  '"2347 Rayburn House Office Building\nWashington, D.C. 20515-4309"'))
    assert m.address_lines == ("2347 Rayburn House Office Building", "Washington, DC 20515-4309")
    for chamber, district, city in (("senate", "", "Washington, DC 20510"), ("house", "1", "Washington, DC 20515")):
        m = member_for(contact_from(tmp_path, header, f"x@x.example.org,A New Member,Member,{chamber},AL,{district},"))
        assert m.address_lines == (city,)


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
            assert ("Foreign Relations Committee" in flat or "Foreign Affairs Committee" in flat) \
                == (contact.bioguide_id in foreign), contact.full_name
            assert ("advice and consent of the Senate" in flat) == (contact.chamber == "senate")


# What each office is asked: the phrases of the numbered asks, by role.
ASKS = {
    "senator": ("say publicly that you would support U.S. accession",
                "urge the President to end the Korea exception and to send the treaty to the Senate"),
    "house": ("urge the Administration to end the Korea exception and to seek U.S. accession",),
    "armed": ("press the Department of Defense on the cost of, and need for, its modeling effort",),
    "foreign": ("urge the Administration to vote in favor of the annual UN General Assembly resolution on the "
                "universalization and implementation of the treaty, instead of abstaining",),
}


def paragraphs(letter) -> list[str]:
    """The body's paragraphs, from the opening to the closing (each numbered ask is one), flattened."""
    body = letter.text.split(":\n\n", 1)[1].split("\nSincerely,")[0]
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n|\n(?=\s+\d\. )", body) if p.strip()]


def test_each_office_is_asked_what_its_role_can_do_and_nothing_else(congress_letters, memberships):
    armed = memberships["SSAS"] | memberships["HSAS"]
    foreign = memberships["SSFR"] | memberships["HSFA"]
    seen = set()
    for contact, letter in congress_letters:
        roles = {"senator" if contact.chamber == "senate" else "house"}
        roles |= {"armed"} if contact.bioguide_id in armed else set()
        roles |= {"foreign"} if contact.bioguide_id in foreign else set()
        seen.add(frozenset(roles))
        asks = [p for p in paragraphs(letter) if re.match(r"\d\. ", p)]
        expected = sum(len(ASKS[r]) for r in roles)
        if expected == 1:   # one ask is a sentence, not a list of one
            assert asks == [] and any(p.startswith("I respectfully ask you to urge") for p in paragraphs(letter))
        else:
            assert len(asks) == expected, (contact.full_name, asks)
        for text in (" ".join(letter.text.split()), " ".join(unescape(re.sub(r"<[^>]+>", " ", letter.html)).split())):
            for role, phrases in ASKS.items():
                for phrase in phrases:
                    assert (phrase in text) == (role in roles), (contact.full_name, role, phrase)
    # Every combination the Congress has was seen, including a member on no committee the letter speaks to.
    assert {frozenset({"senator"}), frozenset({"house"}), frozenset({"senator", "armed", "foreign"}),
            frozenset({"house", "armed", "foreign"})} <= seen


def test_the_paragraph_on_this_office_comes_right_after_the_opening(congress_letters):
    for contact, letter in congress_letters:
        opening, role = paragraphs(letter)[:2]
        assert opening.startswith("I write on behalf of Advocacy Network")
        if contact.chamber == "senate":
            assert role.startswith("Accession runs through the Senate") and "advice and consent" in role
        else:
            assert role.startswith("The House does not vote on treaties")


def test_every_letter_has_the_strongest_facts_and_the_signature(congress_letters):
    for _, letter in congress_letters:
        for text in (" ".join(letter.text.split()), " ".join(unescape(re.sub(r"<[^>]+>", " ", letter.html)).split())):
            assert "more than one billion dollars" in text
            assert "no additional humanitarian and socioeconomic harm" in text
            assert "not used antipersonnel mines since 1991" in text
            assert "last obstacle to bringing U.S. policy in line with the treaty" in text
        assert "Jordan Organizer" in letter.text and "Advocacy Network" in letter.text
        assert all(len(line) <= 72 for line in letter.text.splitlines() if "Office Building" not in line)


def test_no_letter_says_a_committee_oversees_us_votes_at_the_un(congress_letters):
    """In any wording: the UN vote appears only in the ask to urge the Administration, never beside a
    committee's part."""
    un = re.compile(r"\b(UN|U\.N\.|United Nations|General Assembly)\b")
    for contact, letter in congress_letters:
        html = unescape(re.sub(r"<[^>]+>", " ", letter.html))
        for text in (letter.text, html):
            flat = re.sub(r"\s+\d\. ", " ", " ".join(text.split()))
            for sentence in re.split(r"(?<=[.;:])\s+", flat):
                if un.search(sentence):
                    ask = sentence.removeprefix("and ")
                    assert ask.startswith("urge the Administration to vote in favor"), (contact.full_name, sentence)


def test_one_page_and_no_three_paragraphs_open_alike(congress_letters):
    longest = max(congress_letters, key=lambda cl: len(" ".join(paragraphs(cl[1])).split()))
    assert {"SSAS", "SSFR"} <= longest[0].full_committees     # the longest role combination
    for contact, letter in congress_letters:
        paras = paragraphs(letter)
        assert len(" ".join(paras).split()) <= 450, contact.full_name
        openers = [" ".join(re.sub(r"^\d\. ", "", p).split()[:2]).lower() for p in paras]
        for i in range(len(openers) - 2):
            assert len(set(openers[i:i + 3])) > 1, (contact.full_name, openers[i:i + 3])


def test_every_name_is_one_name_and_no_honorific_quotes_a_nickname(congress_letters):
    suffix = re.compile(r",?\s+(Jr\.?|Sr\.?|II|III|IV|V)$")
    for contact, letter in congress_letters:
        m = member_for(contact)
        assert m.salutation == f"Dear {m.title} {m.last_name}", contact.full_name
        assert suffix.sub("", m.full_name).endswith(" " + m.last_name), (m.full_name, m.last_name)
        assert not re.search(r"[\"“”„‟]", m.honorific), m.honorific
        assert f"{m.honorific}\n" in letter.text and f"{m.salutation}:" in letter.text
        assert "&#34;" not in letter.html.split("<p>", 2)[1] and "&quot;" not in letter.html.split("<p>", 2)[1]


def test_every_address_block_puts_the_city_on_its_own_line(congress_letters):
    without = 0
    for contact, letter in congress_letters:
        block = letter.text.split("\n\n", 1)[0].splitlines()
        city = "Washington, DC 20510" if contact.chamber == "senate" else "Washington, DC 20515"
        assert block[-1].startswith(city), block
        if contact.fields.get("office_address"):
            assert block[-2].endswith("Office Building") or "Capitol" in block[-2], block
        else:
            without += 1
            assert block[-2] == member_for(contact).chamber_name and block[-1] == city
        assert "Washington, DC" not in " ".join(block[:-1])
    assert without >= 1   # the newly sworn-in member without an address


def test_delegates_and_the_resident_commissioner_are_addressed_correctly(congress_letters):
    seen = {}
    for contact, letter in congress_letters:
        if contact.state in ("DC", "AS", "GU", "MP", "VI", "PR"):
            seen[contact.state] = letter.text
            title = "Resident Commissioner" if contact.state == "PR" else "Delegate"
            m = member_for(contact)
            assert f"Dear {title} {m.last_name}:" in letter.text
            assert f"The Honorable {m.full_name}" in letter.text
            assert "Dear Representative" not in letter.text and "Senator" not in letter.text
    assert sorted(seen) == ["AS", "DC", "GU", "MP", "PR", "VI"]


def test_no_nickname_first_name_reaches_a_letter(congress_letters):
    for contact, letter in congress_letters:
        if "(" in contact.first_name:  # 'James (Jim)'
            assert contact.first_name not in letter.text and contact.first_name not in letter.html
        m = member_for(contact)
        assert f"Dear {m.title} {m.last_name}:" in letter.text


FACT_NUMBERS = {"2014", "1997", "1991"}  # the only figures DESIGN.md gives, besides "one billion"
CHAMBER_ZIPS = {"20510", "20515"}        # the Senate's and the House's, for a member the list has no address for


def test_no_letter_names_a_year_figure_or_fact_beyond_design_and_contact_data(congress_letters):
    sender_numbers = set(re.findall(r"\d+", " ".join(filter(None, vars(SENDER).values()))))
    for contact, letter in congress_letters:
        allowed = FACT_NUMBERS | CHAMBER_ZIPS | sender_numbers | set(re.findall(r"\d+", " ".join(contact.fields.values())))
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


def test_ampersands_and_angle_brackets_typed_in_a_partial_are_escaped_in_html_only(tmp_path):
    import html.parser
    import shutil

    from outreach.config import Sender
    from outreach.contacts import read_contacts
    from outreach.letters import TemplateSet

    folder = tmp_path / "t"
    shutil.copytree(ROOT / "templates" / "korea-exception", folder)
    content = folder / "_content.j2"
    text = content.read_text(encoding="utf-8")
    old = "{% macro opening(m, s) -%}\n"
    assert old in text
    content.write_text(text.replace(old, old + "Research & Policy <Korea> \"quoted\" "), encoding="utf-8")
    contact = read_contacts(ROOT / "contacts" / "sample.csv").contacts[0]
    sender = Sender(name="Jo Smith & Co", email="jo@example.org", organization="A <b> & C")
    letter = TemplateSet(folder, sender, "k").render(contact)
    assert "Research & Policy <Korea> \"quoted\"" in letter.text
    assert "Research &amp; Policy &lt;Korea&gt; \"quoted\"" in letter.html
    assert "on behalf of A &lt;b&gt; &amp; C" in letter.html            # values, escaped as before, once
    assert "&amp;amp;" not in letter.html

    class Check(html.parser.HTMLParser):
        tags: list = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    parser = Check()
    parser.feed(letter.html)
    assert "korea" not in parser.tags and "b" not in parser.tags
