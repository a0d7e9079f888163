"""Contact lists as people really have them: every dirty case, asserted by line, column and reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, assert_no_traceback
from outreach.contacts import read_contacts

HEADER = "bioguide_id,full_name,first_name,last_name,chamber,state,district,party,email,committees,staffer"
GOOD = [
    "S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,dan.sullivan@senate.example.org,SSAS;SSCM,",
    "K000384,Tim Kaine,Timothy,Kaine,senate,VA,,Democrat,tim.kaine@senate.example.org,SSAS;SSFR,",
    "R000575,Mike Rogers,Mike,Rogers,house,AL,3,Republican,mike.rogers@house.example.org,HSAS,",
]


def write(tmp_path, text: str | bytes, name: str = "list.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def problems(path):
    return [(p.line, p.column, p.reason) for p in read_contacts(path).problems]


# -- reading what people have ----------------------------------------------------

def test_clean_list_is_all_valid_and_exits_0(tmp_path, outreach):
    path = write(tmp_path, "\n".join([HEADER, *GOOD]) + "\n")
    r = outreach("contacts", "check", path)
    assert r.code == 0, r.out + r.err
    assert "3 rows, 3 valid, 0 rejected" in r.out


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["utf8", "utf8-bom"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_encodings_newlines_and_delimiters_read_the_same(tmp_path, bom, newline, delimiter):
    lines = [HEADER, *GOOD, "L000570,Ben Ray Luján,Ben,Luján,senate,NM,,Democrat,ben.lujan@senate.example.org,SSAF,"]
    # Cells holding the delimiter are quoted, as spreadsheets do when they export.
    text = newline.join(line.replace("SSAS;SSCM", '"SSAS;SSCM"').replace(",", delimiter) for line in lines) + newline
    result = read_contacts(write(tmp_path, bom + text.encode("utf-8")))
    assert result.problems == []
    assert [c.full_name for c in result.contacts] == ["Dan Sullivan", "Tim Kaine", "Mike Rogers", "Ben Ray Luján"]
    assert result.contacts[0].committees == ("SSAS", "SSCM")
    assert result.encoding == "utf-8"
    assert not result.contacts[0].full_name.startswith("\ufeff")


def test_cp1252_file_is_read_and_said_so(tmp_path, outreach):
    text = "\n".join([HEADER, "L000570,Ben Ray Luján,Ben,Luján,senate,NM,,Democrat,ben.lujan@senate.example.org,,"])
    path = write(tmp_path, text.encode("cp1252"))
    result = read_contacts(path)
    assert result.encoding == "cp1252"
    assert result.contacts[0].full_name == "Ben Ray Luján"
    assert "line 2" in result.notes[0] and "Windows-1252" in result.notes[0]
    r = outreach("contacts", "check", path)
    assert r.code == 0 and "note: not valid UTF-8" in r.out


def test_headers_in_any_case_with_stray_spaces_and_cells_with_spaces(tmp_path):
    text = (" Email , FULL NAME ,Chamber,  state ,District \n"
            "  dan.sullivan@senate.example.org  ,  Dan   Sullivan , Senate , ak ,\n")
    result = read_contacts(write(tmp_path, text))
    assert result.problems == []
    c = result.contacts[0]
    assert (c.email, c.full_name, c.chamber, c.state) == ("dan.sullivan@senate.example.org", "Dan Sullivan", "senate", "AK")
    assert c.last_name == "Sullivan"


def test_quoted_fields_with_commas_quotes_and_line_breaks_keep_row_numbers(tmp_path):
    text = (HEADER + ",office_address\n"
            + GOOD[0] + ',"706 Hart Senate Office Building\nWashington, DC 20510"\n'
            + 'C001087,"Eric A. ""Rick"" Crawford",Eric,Crawford,house,AR,1,Republican,rick@house.example.org,HSAS,,"x"\n'
            + "X1,Bad Row,Bad,Row,house,AR,1,Republican,not-an-email,,,\n")
    result = read_contacts(write(tmp_path, text))
    assert result.contacts[0].fields["office_address"] == "706 Hart Senate Office Building\nWashington, DC 20510"
    assert result.contacts[1].full_name == 'Eric A. "Rick" Crawford'
    # The bad row is the fourth spreadsheet row although the file's fifth line.
    assert {(p.line, p.column) for p in result.problems} == {(4, "email"), (4, "bioguide_id")}


def test_non_ascii_names_are_kept_exactly(tmp_path):
    text = HEADER + "\nH001103,Pablo José Hernández,Pablo José,Hernández Rivera,house,PR,0,Democrat,pablo@house.example.org,,\n"
    c = read_contacts(write(tmp_path, text)).contacts[0]
    assert (c.full_name, c.last_name) == ("Pablo José Hernández", "Hernández Rivera")


def test_first_and_last_name_without_full_name(tmp_path):
    text = "email,first_name,last_name,chamber,state,district\nj@house.example.org,James (Jim),Moylan,rep,GU,AL\n"
    result = read_contacts(write(tmp_path, text))
    c = result.contacts[0]
    assert (c.chamber, c.district, c.last_name, c.full_name) == ("house", 0, "Moylan", "")


# -- the problems, each with its line, column and reason ---------------------------

CASES = [
    # (row, column, words the reason must contain)
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,,,", "email", "missing"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,dan.sullivan@,,", "email", "not a valid email"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,dan sullivan@senate.example.org,,", "email", "not a valid email"),
    ("S001198,,,,senate,AK,,Republican,d@senate.example.org,,", "full_name", "missing name"),
    ("S001198,,Dan,,senate,AK,,Republican,d@senate.example.org,,", "full_name", "missing name"),
    ("S001198,Dan Sullivan,Dan,Sullivan,,AK,,Republican,d@senate.example.org,,", "chamber", "missing"),
    ("S001198,Dan Sullivan,Dan,Sullivan,governor,AK,,Republican,d@senate.example.org,,", "chamber", "not a chamber"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,,,Republican,d@senate.example.org,,", "state", "missing"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,XX,,Republican,d@senate.example.org,,", "state", "not a U.S. state"),
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,,Republican,m@house.example.org,,", "district", "missing for a House member"),
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,three,Republican,m@house.example.org,,", "district", "not a district"),
    # Characters Python's isdigit() takes but that are not a district number.
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,²,Republican,m@house.example.org,,", "district", "not a district"),
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,٣,Republican,m@house.example.org,,", "district", "not a district"),
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,9,Republican,m@house.example.org,,", "district", "AL has 7 districts"),
    ("R000575,Mike Rogers,Mike,Rogers,house,AL,AL,Republican,m@house.example.org,,", "district",
     "none elected at large"),
    ("G000581,Vicente Gonzalez,Vicente,Gonzalez,house,TX,0,Democrat,v@house.example.org,,", "district",
     "TX has 38 districts"),
    ("N000147,Eleanor Holmes Norton,Eleanor,Norton,house,DC,2,Democrat,e@house.example.org,,", "district", "at large"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,1,Republican,d@senate.example.org,,", "district", "a senator has no district"),
    ("N000147,Eleanor Holmes Norton,Eleanor,Norton,senate,DC,,Democrat,e@house.example.org,,", "chamber", "has no senators"),
    ("S1198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,d@senate.example.org,,", "bioguide_id", "not a bioguide id"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,d@senate.example.org,Armed Services,", "committees", "not a committee code"),
    ("S001198,Dan Sullivan,Dan,Sullivan,senate,AK,,Republican,d@senate.example.org,SSAS,,extra,cells", "staffer", "quote cells"),
]


@pytest.mark.parametrize("row,column,reason", CASES, ids=[f"{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_each_bad_row_is_reported_and_the_good_rows_still_pass(tmp_path, outreach, row, column, reason):
    path = write(tmp_path, "\n".join([HEADER, GOOD[0], row, GOOD[1]]) + "\n")
    result = read_contacts(path)
    assert [c.line for c in result.contacts] == [2, 4]
    assert [(p.line, p.column) for p in result.problems] == [(3, column)]
    assert reason in result.problems[0].reason
    r = outreach("contacts", "check", path)
    assert r.code == 1
    assert f"line 3, column {column}:" in r.out
    assert_no_traceback(r)


def test_duplicates_keep_the_first_compared_case_insensitively(tmp_path):
    text = "\n".join([HEADER, GOOD[0], GOOD[1], GOOD[0].replace("dan.sullivan", "Dan.Sullivan").replace("example.org", "EXAMPLE.ORG")])
    result = read_contacts(write(tmp_path, text))
    assert [c.line for c in result.contacts] == [2, 3]
    [p] = result.problems
    assert (p.line, p.column) == (4, "email") and "same email as line 2" in p.reason


def test_chamber_abbreviations_and_at_large_spellings(tmp_path):
    text = ("email,full_name,chamber,state,district\n"
            "a@x.example.org,A B,SEN,ak,\n"
            "b@x.example.org,C D,Rep,AK,AL\n"
            "c@x.example.org,E F,rep,wy,0\n"
            "d@x.example.org,G H,House,Puerto Rico,0\n")
    result = read_contacts(write(tmp_path, text))
    assert result.problems == []
    assert [(c.chamber, c.state, c.district) for c in result.contacts] == [
        ("senate", "AK", None), ("house", "AK", 0), ("house", "WY", 0), ("house", "PR", 0)]


def test_json_output_has_the_documented_shape(tmp_path, outreach):
    path = write(tmp_path, "\n".join([HEADER, GOOD[0], CASES[1][0]]))
    r = outreach("contacts", "check", path, "--json")
    assert r.code == 1
    data = json.loads(r.out)
    assert {"file", "rows", "valid", "problems"} <= set(data)
    assert (data["rows"], data["valid"]) == (2, 1)
    assert data["problems"] == [{"line": 3, "column": "email", "value": "dan.sullivan@",
                                 "reason": data["problems"][0]["reason"]}]


# -- files that cannot be used: exit 2, one line -----------------------------------

UNUSABLE = {
    "missing-email-column": ("full_name,chamber,state\nDan Sullivan,senate,AK\n", "required column email missing"),
    "missing-name-columns": ("email,first_name,chamber,state\nd@x.example.org,Dan,senate,AK\n", "full_name (or first_name and last_name)"),
    "empty-file": ("", "the file is empty"),
    "no-valid-row": ("email,full_name,chamber,state\nnot-an-email,Dan,senate,AK\n", "no valid row"),
    "xlsx": (b"PK\x03\x04 rest of a zip", "spreadsheet workbook"),
    "duplicate-header": ("email,E-mail,full_name,chamber,state\n", "both mean 'email'"),
    "binary": (b"email,full_name\x00\x00,chamber,state\n", "NUL bytes"),
}


@pytest.mark.parametrize("name", UNUSABLE)
def test_unusable_files_exit_2_with_one_line(tmp_path, outreach, name):
    content, words = UNUSABLE[name]
    path = write(tmp_path, content)
    r = outreach("contacts", "check", path)
    assert r.code == 2
    assert words in r.out + r.err
    assert_no_traceback(r)
    assert len(r.err.strip().splitlines()) == 1


def test_missing_file_and_folder_exit_2(tmp_path, outreach):
    for target in (tmp_path / "nope.csv", tmp_path):
        r = outreach("contacts", "check", target)
        assert r.code == 2 and str(target) in r.err
        assert_no_traceback(r)


def test_no_traceback_reaches_the_user_from_a_real_process(tmp_path):
    """The installed entry point, run as a user runs it, on every dirty file above."""
    paths = [write(tmp_path, content, f"{name}.csv") for name, (content, _) in UNUSABLE.items()]
    paths += [write(tmp_path, "\n".join([HEADER, row]), f"case{i}.csv") for i, (row, _, _) in enumerate(CASES)]
    for path in paths:
        proc = subprocess.run([sys.executable, "-m", "outreach", "contacts", "check", str(path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode in (1, 2), (path, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


# -- the real data -------------------------------------------------------------------

def test_the_shared_congress_list_is_all_valid(shared, outreach):
    r = outreach("contacts", "check", shared / "congress" / "contacts-congress.csv")
    assert r.code == 0, r.out
    assert "537 rows, 537 valid, 0 rejected" in r.out


def test_the_sample_list_is_valid_and_covers_the_four_committees(outreach):
    result = read_contacts(ROOT / "contacts" / "sample.csv")
    assert result.problems == [] and 10 <= len(result.contacts) <= 16
    codes = set().union(*(c.full_committees for c in result.contacts))
    assert {"SSAS", "SSFR", "HSAS", "HSFA"} <= codes
    assert all(c.email.endswith(".example.org") or c.email.endswith("@example.org") for c in result.contacts)


@pytest.mark.parametrize("full_name,surname", [
    ("Dan Sullivan", "Sullivan"), ('Henry C. "Hank" Johnson, Jr.', "Johnson"), ("J. French Hill", "Hill"),
    ("Chris Van Hollen", None), ("Debbie Wasserman Schultz", None), ("Pablo José Hernández", None),
])
def test_a_surname_is_guessed_only_when_unambiguous(tmp_path, full_name, surname):
    text = f'email,full_name,chamber,state,district\nx@house.example.org,"{full_name.replace(chr(34), 2 * chr(34))}",house,VA,1\n'
    result = read_contacts(write(tmp_path, text))
    if surname is None:
        [p] = result.problems
        assert p.column == "full_name" and "last_name column" in p.reason
    else:
        assert result.contacts[0].last_name == surname



def test_committee_roles_and_a_rows_own_forms_are_checked_and_said(tmp_path, outreach):
    header = HEADER + ",committee_roles,salutation,honorific"
    path = write(tmp_path, "\n".join([
        header,
        GOOD[0] + ",SSAS=Ranking Member,,",
        GOOD[1] + ",SSAS Chairman,,",                                    # not CODE=Title
        GOOD[2] + ",HSAS=Chair,Dear Mr. Chairman:,The Honorable Mike D. Rogers",
    ]) + "\n")
    assert problems(path) == [(3, "committee_roles", "'SSAS Chairman' is not CODE=Title, like SSAS=Chairman "
                                                     "(separate them with ;)")]
    r = outreach("contacts", "check", path)
    assert r.code == 1 and "line 3, column committee_roles:" in r.out
    assert "1 row gives their own salutation or honorific: the letters use them instead of the computed forms" in r.out
