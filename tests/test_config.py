"""config.toml: validated on load, unknown keys named, paths relative to the file."""

from __future__ import annotations

import pytest

from conftest import ROOT, assert_no_traceback
from outreach.config import load_config
from outreach.errors import UserError

MINIMAL = """
[sender]
name = "A. Organizer"
email = "organizer@advocacy.example.org"

[campaigns.test]
contacts = "lists/c.csv"
templates = "letters"
"""


def write_config(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path) -> str:
    with pytest.raises(UserError) as e:
        load_config(path)
    return str(e.value)


def test_the_shipped_config_is_valid_and_documents_every_key(outreach):
    cfg = load_config(ROOT / "config.toml")
    assert "korea-exception" in cfg.campaigns
    text = (ROOT / "config.toml").read_text()
    for key in ("transport", "outbox_dir", "batch_size", "rate_per_minute", "concurrency",
                "max_attempts", "timeout_s", "api_host", "api_key_env", "webhook_public_key_env"):
        assert key in text
    r = outreach("--config", ROOT / "config.toml", "config", "check")
    assert r.code == 0 and "config.toml: valid" in r.out, r.out + r.err


def test_defaults_and_paths_relative_to_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_config(write_config(tmp_path, MINIMAL))
    assert cfg.delivery.transport == "outbox"
    assert cfg.sendgrid.api_host == "https://api.sendgrid.com"
    assert cfg.sendgrid.api_key_env == "SENDGRID_API_KEY"
    assert cfg.sendgrid.webhook_public_key_env == "SENDGRID_WEBHOOK_PUBLIC_KEY"
    assert cfg.outbox_dir == tmp_path / "outbox"
    assert cfg.resolve(cfg.campaigns["test"].contacts) == tmp_path / "lists" / "c.csv"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'outreach.db'}"


def test_relative_sqlite_url_is_relative_to_the_config(tmp_path):
    cfg = load_config(write_config(tmp_path, MINIMAL + '\n[database]\nurl = "sqlite:///data/l.db"\n'))
    assert cfg.database_url == f"sqlite:///{tmp_path / 'data' / 'l.db'}"


@pytest.mark.parametrize("extra,words", [
    ("[delivery]\nbatchsize = 10\n", "unknown key [delivery] batchsize"),
    ("[delivery]\nbatch_size = \"ten\"\n", "[delivery] batch_size"),
    ("[delivery]\nbatch_size = 0\n", "[delivery] batch_size"),
    ("[delivery]\ntransport = \"pigeon\"\n", "[delivery] transport"),
    ("[sendgrid]\napi_key_env = \"SG.abc-def\"\n", "[sendgrid] api_key_env"),
    ("[sendgrid]\napi_host = \"api.sendgrid.com\"\n", "[sendgrid] api_host"),
    ("[colour]\nx = 1\n", "unknown key colour"),
    ("[campaigns.test.audience]\nstates = [\"Atlantis\"]\n", "[campaigns.test.audience] states"),
    ("[campaigns.test.audience]\nchamber = \"lords\"\n", "[campaigns.test.audience] chamber"),
    ("[campaigns.test.audience]\nparty = [\"D\"]\n", "unknown key [campaigns.test.audience] party"),
    ("[campaigns.\"Bad Name\"]\ncontacts = \"c\"\ntemplates = \"t\"\n", "campaign name 'Bad Name'"),
])
def test_bad_values_and_unknown_keys_are_named(tmp_path, outreach, extra, words):
    path = write_config(tmp_path, MINIMAL + "\n" + extra)
    assert words in error_of(path)
    r = outreach("--config", path, "config", "check")
    assert r.code == 2 and words in r.err
    assert_no_traceback(r)


def test_missing_sender_email_and_bad_sender_email(tmp_path):
    assert "[sender] email is required" in error_of(write_config(tmp_path, '[sender]\nname = "x"\n'))
    bad = MINIMAL.replace("organizer@advocacy.example.org", "organizer@")
    assert "[sender] email" in error_of(write_config(tmp_path, bad))


def test_invalid_toml_names_the_line(tmp_path, outreach):
    path = write_config(tmp_path, MINIMAL + "\n[delivery\n")
    r = outreach("--config", path, "config", "check")
    assert r.code == 2 and "invalid TOML" in r.err and "line" in r.err
    assert_no_traceback(r)


def test_missing_config_says_what_to_do(tmp_path, outreach):
    r = outreach("--config", tmp_path / "nope.toml", "config", "check")
    assert r.code == 2 and "config file not found" in r.err and "--config" in r.err


def test_campaign_choice(tmp_path):
    two = MINIMAL + '\n[campaigns.other]\ncontacts = "c.csv"\ntemplates = "t"\n'
    cfg = load_config(write_config(tmp_path, two))
    with pytest.raises(UserError, match="choose one with --campaign NAME"):
        cfg.campaign(None)
    with pytest.raises(UserError, match="no campaign 'nope'"):
        cfg.campaign("nope")
    assert cfg.campaign("other")[0] == "other"
    assert load_config(write_config(tmp_path, MINIMAL)).campaign(None)[0] == "test"


# -- config check runs the preflight ------------------------------------------------------------------

def broken_templates(project, old: str, new: str, name: str = "_content.j2") -> Path:
    import shutil

    templates = project.root / "templates"
    shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    path = templates / name
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    project.write_config(templates=templates)
    return path


def test_config_check_renders_every_letter_and_says_how_many(project, outreach):
    r = outreach("--config", project.config, "config", "check")
    assert r.code == 0, r.out + r.err
    assert "campaign korea-exception: contacts.csv + " in r.out and ": ok, 14 letters render" in r.out


def test_config_check_finds_an_error_that_only_some_offices_reach(project, outreach):
    """The Foreign Relations paragraph is in Kaine's letter (line 4), not in the two before it."""
    path = broken_templates(project, "{% macro foreign_affairs(m) -%}\n",
                            "{% macro foreign_affairs(m) -%}\n{{ m.foreign_affairs_rol }}")
    r = outreach("--config", project.config, "config", "check")
    assert r.code == 2
    line = next(line for line in r.out.splitlines() if "campaign korea-exception" in line)
    assert f"{path}, line " in line and "has no attribute 'foreign_affairs_rol'" in line
    assert "(did you mean `foreign_affairs_role`?)" in line
    assert "first failing for the recipient on line 4" in line and "K000384" in line
    assert "1 campaign cannot run as configured" in r.err
    assert_no_traceback(r)


def test_config_check_names_a_template_syntax_error(project, outreach):
    path = broken_templates(project, "{{ member.honorific }}", "{% if %}", name="letter.txt.j2")
    r = outreach("--config", project.config, "config", "check")
    assert r.code == 2 and f"{path}, line 2: template syntax error" in r.out
    assert_no_traceback(r)


@pytest.mark.parametrize("command", [("send",), ("preview",)])
@pytest.mark.parametrize("typo,suggestion", [
    ("member.last_nme", "last_name"), ("contact.last_nme", "last_name"), ("membr.title", "member"),
    ("sender.organisation", "organization"),
])
def test_a_misspelt_name_suggests_the_closest_in_send_and_preview(project, outreach, command, typo, suggestion):
    broken_templates(project, "{{ member.honorific }}", "{{ member.honorific }}{{ %s }}" % typo,
                     name="letter.txt.j2")
    r = outreach("--config", project.config, *command)
    assert r.code == 2 and f"(did you mean `{suggestion}`?)" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1
    assert_no_traceback(r)


def test_no_suggestion_when_nothing_is_close(project, outreach):
    broken_templates(project, "{{ member.honorific }}", "{{ member.honorific }}{{ member.zzzzqqq }}",
                     name="letter.txt.j2")
    r = outreach("--config", project.config, "preview")
    assert r.code == 2 and "has no attribute 'zzzzqqq'" in r.err and "did you mean" not in r.err
