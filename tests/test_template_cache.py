"""Compiled templates kept between runs: used when safe, never stale, never in the way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import dataclasses

import jinja2
import pytest

from outreach.letters import TemplateSet
from outreach.template_cache import bytecode_caches, cache_folder
from test_letters import SENDER, TEMPLATES, contact_from

HEADER = "email,full_name,last_name,chamber,state,district,staffer"
ROW = 'x@h.example.org,Tom <b>&</b> Jones,Jones,house,AL,1,"Ann ""A&B"" Lee"'


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "outreach" / "templates"


@pytest.fixture
def compiles(monkeypatch):
    """Names of the templates Jinja compiled from source."""
    seen: list[str] = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, filename=None, raw=False, defer_init=False):
        seen.append(name)
        return original(self, source, name, filename, raw, defer_init)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    return seen


# The paragraphs partial (_content.j2) prints the organization: escaped in HTML only.
ORGANIZED = dataclasses.replace(SENDER, organization="Peace <&> Action")


def letter(templates, tmp_path):
    return TemplateSet(templates, ORGANIZED, "korea-exception").render(contact_from(tmp_path, HEADER, ROW))


def test_templates_compiled_once_are_loaded_from_the_cache_after(cache, compiles, tmp_path):
    first = letter(TEMPLATES, tmp_path)
    assert {"letter.txt.j2", "letter.html.j2", "_content.j2"} <= set(compiles)
    assert cache_folder() == cache and len(list(cache.iterdir())) == 4  # 3 files, _content.j2 twice
    compiles.clear()
    again = letter(TEMPLATES, tmp_path)
    assert compiles == [None]  # only the subject line, built from a string
    assert (again.subject, again.text, again.html) == (first.subject, first.text, first.html)


def test_text_and_html_never_share_compiled_code(cache, tmp_path):
    letter(TEMPLATES, tmp_path)
    warm = letter(TEMPLATES, tmp_path)
    assert "Tom &lt;b&gt;&amp;&lt;/b&gt; Jones" in warm.html and "<b>" not in warm.html
    assert "The Honorable Tom <b>&</b> Jones" in warm.text
    assert "Peace &lt;&amp;&gt; Action" in warm.html and "<&>" not in warm.html
    assert "Peace <&> Action" in warm.text


def test_an_edited_template_is_compiled_afresh(cache, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    assert "Sincerely" in letter(templates, tmp_path).text
    path = templates / "letter.txt.j2"
    path.write_text(path.read_text().replace("Sincerely", "Respectfully"))
    assert "Respectfully" in letter(templates, tmp_path).text


def test_a_damaged_cache_entry_is_a_miss(cache, compiles, tmp_path):
    first = letter(TEMPLATES, tmp_path)
    for i, entry in enumerate(sorted(cache.iterdir())):
        entry.write_bytes([b"", b"j2", b"garbage" * 50, entry.read_bytes()[:40]][i % 4])
    compiles.clear()
    again = letter(TEMPLATES, tmp_path)
    assert {"letter.txt.j2", "letter.html.j2", "_content.j2"} <= set(compiles)
    assert (again.text, again.html) == (first.text, first.html)


def test_a_cache_that_cannot_be_written_does_not_stop_a_run(cache, tmp_path, monkeypatch):
    def full(self, bucket):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jinja2.FileSystemBytecodeCache, "dump_bytecode", full)
    assert "Sincerely" in letter(TEMPLATES, tmp_path).text


def test_no_cache_where_the_folder_cannot_be_made_or_is_open_to_others(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert bytecode_caches({}, {})[0] is None
    assert "Sincerely" in letter(TEMPLATES, tmp_path).text
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "shared"))
    assert bytecode_caches({}, {})[0] is not None
    assert cache_folder().stat().st_mode & 0o777 == 0o700 and cache_folder().parent.stat().st_mode & 0o777 == 0o700
    for folder in (cache_folder(), cache_folder().parent):  # another user could swap what is inside
        os.chmod(folder, 0o777)
        assert bytecode_caches({}, {})[0] is None
        os.chmod(folder, 0o700)
    assert bytecode_caches({}, {})[0] is not None


def narrow(text, width=40):
    return text[:width]


def test_a_changed_filter_or_setting_never_shares_compiled_code(cache):
    # Jinja runs filters on constant text while compiling, so the filter is part of the key.
    import functools

    from outreach.letters import wrap

    def key(settings, filters):
        return bytecode_caches(filters, settings)[0].pattern

    base = key({"autoescape": False}, {"wrap": wrap})
    assert base == key({"autoescape": False}, {"wrap": wrap})
    assert base != key({"autoescape": True}, {"wrap": wrap})
    assert base != key({"autoescape": False}, {"wrap": narrow})
    # The same code with another default width (TEXT_WIDTH, say), under lru_cache as wrap is.
    wide, usual = (functools.lru_cache(maxsize=8)(lambda text, width=w: text[:width]) for w in (80, 72))
    assert key({}, {"wrap": wide}) != key({}, {"wrap": usual})


def test_every_process_names_the_same_code_alike(cache, tmp_path):
    code = ("from outreach.config import Sender; from outreach.letters import TemplateSet; "
            f"t = TemplateSet(__import__('pathlib').Path({str(TEMPLATES)!r}), "
            "Sender(name='a', email='a@b.org'), 'c'); "
            "print(t._text_env.bytecode_cache.pattern, t._html_env.bytecode_cache.pattern)")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "random")}
    assert len(names) == 1 and len(set(names.pop().split())) == 2


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_folder() == tmp_path / ".cache" / "outreach" / "templates"


def test_no_cache_below_a_folder_anyone_may_rename_things_in(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared / "cache"))
    os.chmod(shared, 0o777)
    assert bytecode_caches({}, {})[0] is None
    os.chmod(shared, 0o1777)  # sticky, as /tmp: only the owner may rename what is in it
    assert bytecode_caches({}, {})[0] is not None
