"""Transports behind one seam: chosen by name in one place, each with its own table; the outbox and
the in-memory transport; the dispatcher driving them without a network."""

from __future__ import annotations

import csv
import re
import importlib
import time

import pytest

from outreach import transports
from outreach.config import load_config
from outreach.dispatch import Dispatcher, NoRecord, Outgoing
from outreach.errors import UserError
from outreach.message import Message
from outreach.transports import SendResult
from outreach.transports.memory import MemoryTransport
from outreach.transports.outbox import OutboxTransport


def message(n: int = 0, **changes) -> Message:
    base = dict(letter_id=f"letter{n:04d}", campaign="korea-exception", from_name="Jordan Organizer",
                from_email="jordan@mine-ban-advocates.org", to_name=f"Office {n}",
                to_email=f"office{n}@house.example.org", subject="A subject", text="Text.\n", html="<p>HTML</p>",
                bioguide_id=f"X{n:06d}")
    base.update(changes)
    return Message(**base)


# -- the registry ------------------------------------------------------------------------------------

def test_every_transport_module_has_the_same_entry_points():
    for name, path in transports.TRANSPORTS.items():
        module = importlib.import_module(path)
        assert isinstance(module.DELIVERS, bool) and callable(module.read_settings) and callable(module.from_config)
    assert transports.module(transports.DRY_RUN).DELIVERS is False


def with_delivery(project, text: str):
    config = project.config.read_text().replace('[delivery]\noutbox_dir = "outbox"',
                                                f'[delivery]\noutbox_dir = "outbox"\n{text}')
    project.config.write_text(config)
    return load_config(project.config)


def test_the_outbox_cannot_go_live_and_says_what_can(project):
    with pytest.raises(UserError, match='transport is "outbox", which only writes files; set it to "sendgrid", '
                                        '"smtp" for going live'):
        transports.open_transport(load_config(project.config))


def test_sendgrid_needs_its_key_from_the_environment(project, monkeypatch):
    cfg = with_delivery(project, 'transport = "sendgrid"')
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"\$SENDGRID_API_KEY is not set"):
        transports.open_transport(cfg)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.a-key")
    transport = transports.open_transport(cfg)
    assert (transport.name, transport.where, transport.paced) == ("sendgrid", "https://api.sendgrid.com", True)


def test_smtp_reads_its_own_table_and_needs_a_host(project):
    cfg = with_delivery(project, 'transport = "smtp"')
    assert cfg.transport_settings("smtp") is None
    with pytest.raises(UserError, match=r"\[smtp\] host is not set"):
        transports.open_transport(cfg)
    project.config.write_text(project.config.read_text() + '\n[smtp]\nhost = "mail.example.org"\nsecurity = "ssl"\n'
                              'colour = "blue"\n')
    with pytest.raises(UserError, match=r"unknown key \[smtp\] colour"):
        load_config(project.config)
    project.config.write_text(project.config.read_text().replace('colour = "blue"\n', ""))
    smtp = load_config(project.config).transport_settings("smtp")
    assert (smtp.host, smtp.port, smtp.security) == ("mail.example.org", 465, "ssl")


def test_a_transport_without_a_preflight_has_none_run():
    transports.preflight(OutboxTransport.__new__(OutboxTransport), message())  # no attribute: nothing to do
    memory = MemoryTransport(refuse_preflight="the key was refused")
    with pytest.raises(UserError, match="the key was refused"):
        transports.preflight(memory, message())


# -- the outbox ------------------------------------------------------------------------------------

def test_the_outbox_publishes_a_complete_run_with_its_manifest(tmp_path):
    outbox = OutboxTransport(tmp_path, "korea-exception", run_id="R1")
    results = [outbox.send(message(n)) for n in range(3)]
    assert all(r.outcome == "accepted" for r in results)
    assert not outbox.folder.exists() and outbox.partial.is_dir()   # hidden until complete
    outbox.close(complete=True)
    assert not outbox.partial.exists() and outbox.where == str(outbox.folder)
    with open(outbox.folder / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["bioguide_id"] for r in rows] == ["X000000", "X000001", "X000002"]
    assert sorted(p.name for p in outbox.folder.glob("*.eml")) == [r["file"] for r in rows]


@pytest.mark.parametrize("fields,expected", [
    ({"bioguide_id": "S001198", "last_name": "Sullivan"}, "0007-S001198-sullivan.eml"),
    ({"bioguide_id": "G000582", "last_name": "González-Colón"}, "0007-G000582-gonzalez-colon.eml"),
    ({"bioguide_id": "", "last_name": "", "to_name": "Pablo José Hernández"}, "0007-hernandez.eml"),
    ({"bioguide_id": "", "last_name": "", "to_name": ""}, "0007-office-1.eml"),        # the email's local part
    ({"bioguide_id": "../../etc", "last_name": "x\x00y/..\\z"}, "0007-etc-x-y-z.eml"),
    ({"bioguide_id": "", "last_name": "王小明"}, "0007-letter.eml"),
    ({"bioguide_id": "S001198", "last_name": "a" * 80}, "0007-S001198-" + "a" * 32 + ".eml"),
    ({"bioguide_id": "S001198", "last_name": "Sullivan", "is_test": True}, "0007-S001198-sullivan-test.eml"),
])
def test_outbox_file_names_say_the_office_in_plain_ascii(fields, expected):
    from dataclasses import replace

    from outreach.transports.outbox import file_name

    m = replace(message(1), to_email="office-1@house.example.org", **fields)
    name = file_name(7, m)
    assert name == expected
    label = name[len("0007-"):-len(".eml")].removesuffix("-test")
    assert len(label) <= 40 and re.fullmatch(r"[A-Za-z0-9-]+", label)


def test_an_outbox_run_cut_short_leaves_nothing(tmp_path):
    outbox = OutboxTransport(tmp_path, "korea-exception", run_id="R2")
    outbox.send(message(1))
    outbox.close(complete=False)
    assert list((tmp_path / "korea-exception").iterdir()) == []


def test_an_outbox_run_of_no_letter_still_has_its_folder(tmp_path):
    outbox = OutboxTransport(tmp_path, "korea-exception", run_id="R3")
    outbox.close()
    assert (outbox.folder / "manifest.csv").read_text().startswith("letter_id,")


# -- the dispatcher over the in-memory transport ------------------------------------------------------

def dispatch(transport, items, **kw):
    settings = {"rate_per_minute": 60000, "concurrency": 4, "max_attempts": 3, **kw}
    return Dispatcher(transport, NoRecord(), **settings).run(items)


def test_a_temporary_error_is_retried_in_the_run(monkeypatch):
    monkeypatch.setattr("outreach.dispatch.BACKOFF_BASE_S", 0.01)
    tries: dict[str, int] = {}

    def answer(m, n):
        tries[m.letter_id] = tries.get(m.letter_id, 0) + 1
        return SendResult("retry", 503, error="HTTP 503") if tries[m.letter_id] == 1 else SendResult("accepted", 202)

    summary = dispatch(MemoryTransport(answer), [Outgoing(f"l{i}", message(i)) for i in range(5)])
    assert (summary.accepted, summary.retried) == (5, 5) and set(tries.values()) == {2}


def test_refused_credentials_stop_the_run():
    summary = dispatch(MemoryTransport(lambda m, n: SendResult("unauthorized", 401, error="key revoked")),
                       [Outgoing(f"l{i}", message(i)) for i in range(20)])
    assert summary.unauthorized and summary.stopped.startswith("credentials refused") and summary.accepted == 0


def test_a_transport_written_here_takes_the_letters_in_order_in_this_thread():
    import threading

    threads = set()

    def answer(m, n):
        threads.add(threading.current_thread())
        return SendResult("accepted")

    memory = MemoryTransport(answer, paced=False)
    summary = dispatch(memory, [Outgoing(f"l{i}", message(i)) for i in range(50)])
    assert summary.accepted == 50 and [m.letter_id for m in memory.sent] == [f"letter{i:04d}" for i in range(50)]
    assert threads == {threading.current_thread()}


def test_the_rate_is_a_ceiling_for_every_worker_together():
    memory = MemoryTransport()
    started = time.monotonic()
    dispatch(memory, [Outgoing(f"l{i}", message(i)) for i in range(6)], rate_per_minute=600)  # one per 0.1 s
    assert time.monotonic() - started >= 0.45
