"""Replies as they arrive: .eml files, mboxes, and SendGrid Inbound Parse posts (raw and parsed
mode, signed with a real P-256 key). Everything is built as the real thing is: messages by the
stdlib's email package, multipart bodies byte by byte."""

from __future__ import annotations

import base64
import email.policy
import hashlib
import json
import mailbox
import time
from email.message import EmailMessage

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.datastructures import Headers

from outreach import webhook
from outreach.inbound import (MAX_TEXT_CHARS, SIGNATURE_HEADER, TIMESTAMP_HEADER, Reply, ReplyError,
                              html_to_text, parse_inbound_post, parse_message, read_file, read_mbox,
                              verify_inbound_signature)

STAFFER = "Jane Staffer <Jane.Staffer@Senate.gov>"
LETTER_ID = "letter-42.campaign-7@outreach.example.org"


def message(body: str = "Thank you for your letter.", *, html: str | None = None, **headers) -> EmailMessage:
    """A reply as a mail client writes it; header names are given with _ for -."""
    msg = EmailMessage()
    defaults = {"From": STAFFER, "To": "Advocacy <Team@Outreach.Example.org>", "Subject": "Re: Landmines",
                "Date": "Thu, 01 Oct 2026 10:00:00 -0400", "Message_ID": "<reply-1@senate.gov>",
                "In_Reply_To": f"<{LETTER_ID}>"}
    for name, value in {**defaults, **headers}.items():
        if value is not None:
            msg[name.replace("_", "-")] = value
    if body is not None:
        msg.set_content(body)
    if html is not None:
        if body is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    return msg


def raw(**kwargs) -> bytes:
    return message(**kwargs).as_bytes()


def form(*parts: tuple, boundary: str = "xYzZY") -> tuple[str, bytes]:
    """A multipart/form-data body as SendGrid posts it: (name, value) fields and
    (name, bytes, filename, content type) file parts, CRLF line ends."""
    out = []
    for part in parts:
        name, value = part[0], part[1]
        value = value.encode() if isinstance(value, str) else value
        if len(part) > 2:
            out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{part[2]}"\r\n'
                       f"Content-Type: {part[3]}\r\n\r\n".encode("utf-8") + value + b"\r\n")
        else:
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            out.append(head.encode() + value + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(out) + f"--{boundary}--\r\n".encode()


# -- one message --------------------------------------------------------------------------------------

def test_a_staffers_reply_is_read_for_who_when_and_what():
    reply = parse_message(raw(Cc="Chief <Chief@Senate.gov>"))
    assert isinstance(reply, Reply)
    assert reply.sender == "jane.staffer@senate.gov" and reply.sender_name == "Jane Staffer"
    assert reply.to == ["team@outreach.example.org", "chief@senate.gov"]
    assert reply.sent_at == 1790863200.0   # 2026-10-01 14:00 UTC
    assert reply.subject == "Re: Landmines"
    assert reply.text.strip() == "Thank you for your letter."
    assert reply.message_id == "reply-1@senate.gov"
    assert reply.auto_reply is None and reply.attachments == [] and reply.spam_score is None


def test_threading_ids_come_in_reply_to_first_then_references_once_each_without_brackets():
    folded = f"References: <older@senate.gov>\r\n <{LETTER_ID}>\r\n\t<older@senate.gov>\r\n".encode()
    reply = parse_message(folded + raw())   # a long References header, folded over lines
    assert reply.refers_to == [LETTER_ID, "older@senate.gov"]


def test_a_message_id_without_brackets_is_still_read():
    data = b"From: a@house.gov\r\nMessage-ID: bare-id@house.gov\r\nIn-Reply-To: x@y.org\r\n\r\nhi\r\n"
    reply = parse_message(data)
    assert reply.message_id == "bare-id@house.gov" and reply.refers_to == ["x@y.org"]
    assert reply.dedupe_key == "mid:bare-id@house.gov"


def test_no_threading_headers_gives_no_ids():
    reply = parse_message(raw(In_Reply_To=None, Message_ID=None))
    assert reply.refers_to == [] and reply.message_id is None


def test_an_encoded_subject_and_display_name_are_decoded():
    reply = parse_message(raw(Subject="Re: Mine Ban Treaty — merci, José", From="José Núñez <jn@house.gov>"))
    assert reply.subject == "Re: Mine Ban Treaty — merci, José"
    assert reply.sender_name == "José Núñez" and reply.sender == "jn@house.gov"


def test_an_html_only_reply_becomes_plain_text_without_its_script_or_style():
    html = ("<html><head><title>Reply</title><style>p { color: red }</style></head><body>"
            "<p>Dear&nbsp;advocate,</p><p>The Senator &amp; staff read your letter.</p>"
            "<script>document.write('SECRET-SCRIPT')</script><ul><li>one</li><li>two</li></ul>"
            "<div>Regards,<br>Jane</div></body></html>")
    reply = parse_message(raw(body=None, html=html))
    assert "SECRET-SCRIPT" not in reply.text and "color" not in reply.text and "<" not in reply.text
    assert "Dear\xa0advocate," in reply.text and "The Senator & staff read your letter." in reply.text
    assert reply.text.splitlines()[-2:] == ["Regards,", "Jane"]
    assert "- one\n- two" in reply.text


def test_the_plain_part_is_preferred_to_the_html_part():
    reply = parse_message(raw(body="plain words", html="<p>html words</p>"))
    assert reply.text.strip() == "plain words"


def test_html_to_text_keeps_preformatted_lines_and_drops_an_unclosed_script():
    assert html_to_text("<pre>a  b\n  c</pre>") == "a  b\n  c"
    assert html_to_text("<p>kept</p><script>var x = '<p>gone</p>'") == "kept"
    assert html_to_text("<b>x &lt;y&gt; &#233;</b>") == "x <y> é"


def test_attachments_are_listed_with_their_decoded_sizes_and_contents_are_not_kept():
    msg = message()
    msg.add_attachment(bytes(range(256)) * 12, maintype="application", subtype="pdf", filename="position.pdf")
    msg.add_attachment("a note", filename="note.txt")
    forwarded = message(body="the original", Subject="Fwd")
    msg.add_attachment(forwarded)
    reply = parse_message(msg.as_bytes())
    assert reply.attachments[:2] == [("position.pdf", 3072), ("note.txt", 7)]
    assert len(reply.attachments) == 3 and reply.attachments[2][1] > 0
    assert reply.text.strip() == "Thank you for your letter."
    assert not any(isinstance(v, bytes) for v in vars(reply).values())


def test_a_long_reply_is_cut_to_the_limit():
    reply = parse_message(raw(body="x" * (MAX_TEXT_CHARS * 2)))
    assert len(reply.text) == MAX_TEXT_CHARS


# -- broken input ---------------------------------------------------------------------------------------

def test_missing_headers_leave_fields_empty_not_an_error():
    reply = parse_message(b"Subject: only a subject\r\n\r\nbody\r\n")
    assert (reply.sender, reply.sender_name, reply.to, reply.sent_at, reply.message_id) == ("", "", [], None, None)
    assert reply.text.strip() == "body"


@pytest.mark.parametrize("date, expected", [
    ("not a date at all", None),
    ("Thu, 01 Oct 2026 14:00:00", 1790863200.0),        # no zone: read as UTC
    ("Thu, 01 Oct 2026 14:00:00 -0000", 1790863200.0),
    ("Thu, 01 Oct 2026 16:00:00 +0200", 1790863200.0),
])
def test_the_date_is_unix_seconds_or_none(date, expected):
    data = f"From: a@house.gov\r\nDate: {date}\r\n\r\nhi\r\n".encode()
    assert parse_message(data).sent_at == expected


def test_broken_headers_charsets_and_encodings_do_not_raise():
    data = (b"From: \"Unclosed <a@house.gov\r\n"
            b"To: <<<>>>, @@, ;;, good@senate.gov\r\n"
            b"Subject: =?x-no-such-charset?q?broken?= \xff\xfe raw bytes\r\n"
            b"Date: Thu, 99 Foo 2026 99:99:99 +9999\r\n"
            b"Message-ID: <<>>\r\n"
            b"Content-Type: text/plain; charset=x-no-such-charset\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            b"aGVsbG8gd29ybGQ=!!!not base64\r\n")
    reply = parse_message(data)
    assert "good@senate.gov" in reply.to
    assert reply.sent_at is None and reply.message_id is None
    assert "raw bytes" in reply.subject
    assert "hello world" in reply.text


def test_an_undecodable_body_in_a_declared_charset_keeps_what_decodes():
    data = (b"From: a@house.gov\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nna\xefve \xff text\r\n")
    assert parse_message(data).text.startswith("na")
    assert "text" in parse_message(data).text


def test_raw_utf8_bytes_in_headers_are_read_as_utf8_not_left_as_surrogates():
    data = "From: José Núñez <jn@house.gov>\r\nSubject: Re: déjà vu\r\n\r\nhi\r\n".encode()
    reply = parse_message(data)
    assert (reply.sender_name, reply.subject) == ("José Núñez", "Re: déjà vu")


def test_an_address_nested_past_the_recursion_limit_costs_the_sender_only():
    reply = parse_message(b"From: " + b"(" * 5000 + b"a@house.gov\r\nSubject: deep\r\n\r\nhi\r\n")
    assert (reply.sender, reply.subject, reply.text.strip()) == ("", "deep", "hi")


def test_attachment_names_in_rfc_2231_or_rfc_2047_form_are_decoded():
    data = (b"From: a@house.gov\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: text/plain\r\n\r\nbody\r\n--zz\r\n"
            b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n\r\nabc\r\n--zz\r\n"
            b"Content-Type: image/png; name=\"=?utf-8?q?ph=C3=B6to.png?=\"\r\n\r\nPNG\r\n--zz--\r\n")
    reply = parse_message(data)
    assert reply.attachments == [("résumé.pdf", 3), ("phöto.png", 3)] and reply.text.strip() == "body"


def test_an_html_only_multipart_related_reply_reads_its_start_part():
    data = (b"From: a@house.gov\r\nContent-Type: multipart/related; boundary=zz\r\n\r\n--zz\r\n"
            b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n<p>Caf\xe9 &amp; tea</p>\r\n--zz\r\n"
            b"Content-Type: image/png\r\nContent-ID: <logo>\r\n\r\nPNG\r\n--zz--\r\n")
    assert parse_message(data).text == "Café & tea"


@pytest.mark.parametrize("data", [b"", b"   \r\n", b"just some words, not a message", "a str, not bytes"])
def test_what_is_not_a_message_is_refused_in_one_line(data):
    with pytest.raises(ReplyError) as e:
        parse_message(data)
    assert "\n" not in str(e.value) and "not an email message" in str(e.value)


# -- automatic replies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, marker", [
    ({"Auto_Submitted": "auto-replied"}, "Auto-Submitted: auto-replied"),
    ({"Auto_Submitted": "auto-generated; owner-email=x@y"}, "Auto-Submitted: auto-generated"),
    ({"X_Autoreply": "yes"}, "X-Autoreply: yes"),
    ({"X_Autorespond": "Out of office"}, "X-Autorespond"),
    ({"Precedence": "auto_reply"}, "Precedence: auto_reply"),
    ({"Subject": "Out of Office: Re: Landmines"}, "Out of Office"),
    ({"Subject": "Automatic reply: Landmines"}, "Automatic reply"),
    ({"Subject": "Auto: Landmines"}, "Auto:"),
    ({"Subject": "Autoreply: I am away"}, "Autoreply"),
    ({"Subject": "Auto Reply - Senator's office"}, "Auto Reply"),
    ({"Subject": "out of the office until Monday"}, "out of the office"),
])
def test_each_kind_of_automatic_reply_is_named_by_its_marker(headers, marker):
    reason = parse_message(raw(**headers)).auto_reply
    assert reason is not None and marker.lower() in reason.lower()


@pytest.mark.parametrize("headers", [
    {},
    {"Auto_Submitted": "no"},
    {"Precedence": "list"},
    {"X_Auto_Response_Suppress": "All"},
    {"X_Auto_Response_Suppress": "DR, OOF, AutoReply"},     # asks others not to auto-reply: people's mail has it
    {"Precedence": "bulk"},                                  # constituent-mail systems answer with it
    {"Subject": "Re: Out of Office hours for the Senator"},
    {"Subject": "Re: Automobile landmine clearance"},
])
def test_a_human_reply_is_not_taken_for_an_automatic_one(headers):
    assert parse_message(raw(**headers)).auto_reply is None


# -- dedupe keys --------------------------------------------------------------------------------------

def test_the_same_message_gives_the_same_key_and_a_message_id_is_the_key():
    data = raw()
    assert parse_message(data).dedupe_key == parse_message(data).dedupe_key == "mid:reply-1@senate.gov"


def test_without_a_message_id_the_key_hashes_the_bytes_whatever_the_line_endings():
    crlf = message(Message_ID=None).as_bytes(policy=email.policy.SMTP)
    assert b"\r\n" in crlf
    key = parse_message(crlf).dedupe_key
    assert key == "sha256:" + hashlib.sha256(crlf.replace(b"\r\n", b"\n")).hexdigest()
    assert parse_message(crlf.replace(b"\r\n", b"\n")).dedupe_key == key
    assert parse_message(raw(Message_ID=None, body="another reply")).dedupe_key != key


# -- files ----------------------------------------------------------------------------------------------

def test_an_eml_file_is_one_reply_even_though_it_starts_with_from(tmp_path):
    path = tmp_path / "reply.eml"
    path.write_bytes(raw())
    assert path.read_bytes().startswith(b"From:")
    replies = read_file(path)
    assert [r.message_id for r in replies] == ["reply-1@senate.gov"]


def write_mbox(path, messages) -> None:
    box = mailbox.mbox(str(path))
    for msg in messages:
        box.add(msg.as_bytes())
    box.flush()
    box.close()


def test_an_mbox_of_one_and_of_several_messages_is_read_in_order(tmp_path):
    one, several = tmp_path / "one.mbox", tmp_path / "several"
    write_mbox(one, [message()])
    write_mbox(several, [message(Message_ID=f"<r{i}@house.gov>", body=f"From the office, reply {i}")
                         for i in range(3)])
    assert [r.message_id for r in read_file(one)] == ["reply-1@senate.gov"]
    replies = read_file(several)   # no extension: decided by content
    assert [r.message_id for r in replies] == ["r0@house.gov", "r1@house.gov", "r2@house.gov"]
    assert "From the office, reply 2" in replies[2].text
    assert [r.message_id for r in read_mbox(several)] == ["r0@house.gov", "r1@house.gov", "r2@house.gov"]


def test_an_mbox_written_by_hand_with_an_escaped_from_line_is_read(tmp_path):
    path = tmp_path / "saved.eml"   # misnamed: the content decides
    path.write_bytes(b"From jane@senate.gov Thu Oct  1 10:00:00 2026\n"
                     b"From: jane@senate.gov\nMessage-ID: <a@senate.gov>\nSubject: one\n\nfirst\n>From here on\n\n"
                     b"From bob@house.gov Thu Oct  1 11:00:00 2026\n"
                     b"From: bob@house.gov\nMessage-ID: <b@house.gov>\nSubject: two\n\nsecond\n")
    replies = read_file(path)
    assert [(r.sender, r.subject) for r in replies] == [("jane@senate.gov", "one"), ("bob@house.gov", "two")]


@pytest.mark.parametrize("name, content", [
    ("missing.eml", None),            # no such file
    ("", None),                       # the directory itself
    ("empty.eml", b""),
    ("words.eml", b"no headers here"),
])
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ReplyError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_message_that_is_no_message_in_an_mbox_is_named_by_its_number(tmp_path):
    path = tmp_path / "box"
    path.write_bytes(b"From a@house.gov Thu Oct  1 10:00:00 2026\nFrom: a@house.gov\n\nfine\n\n"
                     b"From b@house.gov Thu Oct  1 11:00:00 2026\n\nno headers at all\n")
    with pytest.raises(ReplyError, match=r"box, message 2: .*no headers"):
        read_file(path)


def test_a_missing_mbox_is_one_line_naming_it(tmp_path):
    with pytest.raises(ReplyError, match="nothing.mbox"):
        list(read_mbox(tmp_path / "nothing.mbox"))
    assert not (tmp_path / "nothing.mbox").exists()   # reading never creates a mailbox


# -- Inbound Parse: raw mode ----------------------------------------------------------------------------

def big_reply() -> bytes:
    """A reply with a scanned letter attached: well over 1 MB as a MIME message."""
    msg = message(body="Please find the Senator's response attached.")
    msg.add_attachment(bytes(range(256)) * 4096 + b"\r\n--xYzZ", maintype="application", subtype="pdf",
                       filename="response.pdf")
    return msg.as_bytes()


def test_a_raw_mode_post_over_a_megabyte_is_the_message_plus_envelope_and_spam_check():
    mime = big_reply()
    assert len(mime) > 1_000_000
    content_type, body = form(
        ("dkim", "{@senate.gov : pass}"), ("email", mime), ("to", "team@outreach.example.org"),
        ("from", STAFFER), ("sender_ip", "192.0.2.1"), ("spam_report", "Spam detection report: 0.1 points"),
        ("envelope", json.dumps({"to": ["replies@parse.outreach.example.org"], "from": "bounce@senate.gov"})),
        ("subject", "Re: Landmines"), ("spam_score", "0.1"), ("charsets", json.dumps({"to": "UTF-8"})),
        ("SPF", "pass"))
    reply = parse_inbound_post(content_type, body)
    assert reply.attachments == [("response.pdf", 256 * 4096 + 8)]
    assert reply.text.strip() == "Please find the Senator's response attached."
    assert reply.to == ["team@outreach.example.org", "replies@parse.outreach.example.org"]
    assert reply.spam_score == 0.1 and reply.spam_report == "Spam detection report: 0.1 points"
    assert reply.dedupe_key == "mid:reply-1@senate.gov" == parse_message(mime).dedupe_key
    assert reply.refers_to == [LETTER_ID]


# -- Inbound Parse: parsed mode -------------------------------------------------------------------------

HEADER_BLOCK = ("Received: by mx.sendgrid.net with SMTP id abc\r\n"
                "From: =?iso-8859-1?q?Ren=E9e_Aide?= <Renee.Aide@House.gov>\r\n"
                "To: replies@parse.outreach.example.org\r\n"
                "Subject: =?iso-8859-1?q?Re:_Landmines_=E0_Cor=E9e?=\r\n"
                "Date: Thu, 01 Oct 2026 10:00:00 -0400\r\n"
                f"Message-ID: <parsed-1@house.gov>\r\nIn-Reply-To: <{LETTER_ID}>\r\n"
                "References: <first@house.gov>\r\n"
                "MIME-Version: 1.0\r\n")


def parsed_post(*extra: tuple, headers: str = HEADER_BLOCK, text: bytes | None = None,
                charsets: dict | None = None) -> tuple[str, bytes]:
    text = "Merci: the Congresswoman's reply, déjà vu.\r\n".encode("iso-8859-1") if text is None else text
    charsets = charsets or {"to": "UTF-8", "cc": "UTF-8", "html": "UTF-8", "subject": "UTF-8", "from": "UTF-8",
                            "text": "iso-8859-1"}
    return form(("headers", headers), ("dkim", "{@house.gov : pass}"),
                ("to", "replies@parse.outreach.example.org, \"Team, Advocacy\" <Team@Outreach.Example.org>"),
                ("cc", "Chief <chief@house.gov>"), ("text", text), ("from", "Renée Aide <Renee.Aide@House.gov>"),
                ("sender_ip", "192.0.2.7"), ("envelope", json.dumps({"to": ["replies@parse.outreach.example.org"],
                                                                      "from": "renee.aide@house.gov"})),
                ("subject", "Re: Landmines à Corée"), ("charsets", json.dumps(charsets)), ("SPF", "pass"),
                *extra)


def test_a_parsed_mode_post_decodes_each_field_by_its_charset():
    reply = parse_inbound_post(*parsed_post(("spam_score", "2.5"), ("spam_report", "report")))
    assert reply.text.strip() == "Merci: the Congresswoman's reply, déjà vu."
    assert reply.sender == "renee.aide@house.gov" and reply.sender_name == "Renée Aide"
    assert reply.subject == "Re: Landmines à Corée"
    assert reply.to == ["replies@parse.outreach.example.org", "team@outreach.example.org", "chief@house.gov"]
    assert reply.message_id == "parsed-1@house.gov" and reply.refers_to == [LETTER_ID, "first@house.gov"]
    assert reply.sent_at == 1790863200.0
    assert (reply.spam_score, reply.spam_report, reply.auto_reply) == (2.5, "report", None)
    assert reply.dedupe_key == "mid:parsed-1@house.gov"


@pytest.mark.parametrize("charset, words", [
    ("windows-1252", "“quoted” – café"), ("shift_jis", "地雷禁止条約"), ("koi8-r", "Спасибо")])
def test_parsed_mode_text_in_other_charsets(charset, words):
    reply = parse_inbound_post(*parsed_post(text=words.encode(charset), charsets={"text": charset}))
    assert reply.text == words


def test_parsed_mode_with_an_unknown_charset_or_broken_json_falls_back_to_utf8():
    content_type, body = parsed_post(text="plain café".encode())
    body = body.replace(b'"text": "iso-8859-1"', b'"text": "x-klingon"')
    assert parse_inbound_post(content_type, body).text == "plain café"
    content_type, body = parsed_post(text="plain café".encode())
    body = body.replace(b'{"to": "UTF-8"', b'{{{not json')
    assert parse_inbound_post(content_type, body).text == "plain café"


def test_parsed_mode_attachments_keep_their_exact_binary_size_and_names():
    pdf = b"%PDF-1.4\r\n\x00\xff\r\n--xYzZY-not-quite\r\n\r\n" + bytes(range(256)) * 40
    info = {"attachment1": {"filename": "letter.pdf", "name": "letter.pdf", "type": "application/pdf"},
            "attachment2": {"filename": "photo.jpg", "type": "image/jpeg"}}
    reply = parse_inbound_post(*parsed_post(
        ("attachments", "2"), ("attachment-info", json.dumps(info)),
        ("attachment1", pdf, "letter.pdf", "application/pdf"),
        ("attachment2", b"\xff\xd8\xff\xe0" + b"\n" * 500, "phöto.jpg", "image/jpeg")))
    assert reply.attachments == [("letter.pdf", len(pdf)), ("phöto.jpg", 504)]
    assert reply.text.strip() == "Merci: the Congresswoman's reply, déjà vu."


def test_parsed_mode_html_only_is_converted_and_its_script_dropped():
    reply = parse_inbound_post(*parsed_post(("html", "<p>Hello&nbsp;there</p><script>alert('x-script')</script>"
                                                     "<p>Bye</p>"), text=b""))
    assert reply.text == "Hello\xa0there\n\nBye" and "x-script" not in reply.text


def test_parsed_mode_auto_replies_from_the_header_block_and_from_the_subject():
    reply = parse_inbound_post(*parsed_post(headers=HEADER_BLOCK + "Auto-Submitted: auto-replied\r\n"))
    assert reply.auto_reply == "Auto-Submitted: auto-replied"
    content_type, body = parsed_post(headers="")
    body = body.replace(b"Re: Landmines \xc3\xa0 Cor\xc3\xa9e", b"Automatic reply: Landmines")
    reply = parse_inbound_post(content_type, body)
    assert reply.auto_reply and "Automatic reply" in reply.auto_reply
    assert reply.message_id is None and reply.dedupe_key.startswith("sha256:")
    assert (reply.sender, reply.sender_name) == ("renee.aide@house.gov", "Renée Aide")   # from the `from` field


def test_parsed_mode_posts_of_the_same_message_share_a_key_without_a_message_id():
    headers = HEADER_BLOCK.replace("Message-ID: <parsed-1@house.gov>\r\n", "")
    first = parse_inbound_post(*parsed_post(headers=headers))
    again = parse_inbound_post(*parsed_post(headers=headers))
    other = parse_inbound_post(*parsed_post(headers=headers, text=b"a different reply"))
    assert first.dedupe_key == again.dedupe_key != other.dedupe_key
    assert first.dedupe_key.startswith("sha256:")


def test_a_multipart_body_with_bare_newlines_is_read_too():
    content_type, body = form(("email", raw()))
    reply = parse_inbound_post(content_type, body.replace(b"\r\n", b"\n"))
    assert reply.message_id == "reply-1@senate.gov"


@pytest.mark.parametrize("content_type, body, why", [
    ("application/json", b"[]", "multipart/form-data"),
    ("multipart/form-data", b"--x\r\n\r\n--x--", "boundary"),
    ("multipart/form-data; boundary=abc", b"no boundary in here", "boundary is not in it"),
    ("multipart/form-data; boundary=abc", b'--abc\r\nContent-Disposition: form-data; name="email"\r\n\r\nFrom: a',
     "cut short"),
    ("multipart/form-data; boundary=abc",
     b'--abc\r\nContent-Disposition: form-data; name="spam_score"\r\n\r\n1\r\n--abc--\r\n', "neither"),
    ("multipart/form-data; boundary=abc\r\nX-Evil: 1", b"--abc--", "line break"),
    ("multipart/form-data; boundary=abc", b'--abc\r\nContent-Disposition: form-data; name="email"\r\n--abc--',
     "blank line"),
])
def test_a_bad_post_is_refused_in_one_line(content_type, body, why):
    with pytest.raises(ReplyError) as e:
        parse_inbound_post(content_type, body)
    assert why in str(e.value) and "\n" not in str(e.value)


# -- Inbound Parse: signatures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


def sign(private_key, body: bytes, timestamp: str | None = None) -> dict[str, str]:
    """The two headers a security policy's signature adds: ECDSA over timestamp + raw body."""
    ts = timestamp or str(int(time.time()))
    signature = private_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: ts}


def test_the_signature_headers_and_check_are_the_event_webhooks():
    assert (SIGNATURE_HEADER, TIMESTAMP_HEADER) == (webhook.SIGNATURE_HEADER, webhook.TIMESTAMP_HEADER)
    assert SIGNATURE_HEADER == "X-Twilio-Email-Event-Webhook-Signature"


def test_a_signed_post_verifies_over_its_exact_bytes_then_parses(signing_key):
    content_type, body = parsed_post(("attachment1", bytes(range(256)) * 8, "scan.pdf", "application/pdf"))
    headers = Headers({k.lower(): v for k, v in sign(signing_key, body).items()})   # as Starlette hands them
    assert verify_inbound_signature(signing_key.public_key(), headers, body)
    assert parse_inbound_post(content_type, body).attachments == [("scan.pdf", 2048)]


def test_a_forged_signature_does_not_verify(signing_key):
    _, body = form(("email", raw()))
    forger = ec.generate_private_key(ec.SECP256R1())
    assert not verify_inbound_signature(signing_key.public_key(), sign(forger, body), body)


def test_an_altered_body_or_timestamp_does_not_verify(signing_key):
    _, body = form(("email", raw()))
    headers = sign(signing_key, body, "1790863200")
    altered = body.replace(b"Thank you", b"Thank yov")
    assert altered != body
    assert not verify_inbound_signature(signing_key.public_key(), headers, altered)
    later = {**headers, TIMESTAMP_HEADER: "1790863201"}
    assert not verify_inbound_signature(signing_key.public_key(), later, body)
    assert verify_inbound_signature(signing_key.public_key(), headers, body)


@pytest.mark.parametrize("drop", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_an_unsigned_post_does_not_verify(signing_key, drop):
    _, body = form(("email", raw()))
    headers = sign(signing_key, body)
    del headers[drop]
    assert not verify_inbound_signature(signing_key.public_key(), headers, body)


@pytest.mark.parametrize("charset", ["idna", "undefined", "no-such-charset", "utf-16"])
def test_a_charset_that_is_no_text_codec_still_gives_the_reply(charset):
    content_type, body = form(("headers", "From: a@senate.gov\nSubject: Re: x\n"), ("from", "a@senate.gov"),
                              ("to", "team@outreach.example.org"), ("subject", "Re: x"), ("text", "We agree."),
                              ("charsets", json.dumps({"text": charset, "subject": charset})))
    reply = parse_inbound_post(content_type, body)
    assert reply.sender == "a@senate.gov" and reply.text.strip()
