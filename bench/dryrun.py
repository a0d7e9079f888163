"""The dry run, whole process, on the whole Congress (537) and on 10,000 recipients, beside `mailmerge`.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/dryrun.py [--python OTHER/.venv/bin/python] [--no-mailmerge]

Recipients are built from ../shared/congress/contacts-congress.csv (each
office repeated with a numbered address beyond 537). mailmerge gets an
equivalent template: the same paragraphs (it imports our _content.j2), the
same forms of address, text and HTML parts. Prints, for each size, the whole
`outreach send` from start to exit (the outbox on tmpfs, which takes this
machine's file-creation cost out, and on the project's disk), the render-only
rate of our templates, and mailmerge's rate. `--python` times another
checkout's outreach beside this one, in the same run.

What a user would feel: a difference of more than 0.2 s on the whole Congress,
or of more than 1 s on 10,000 letters.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "congress" / "contacts-congress.csv"
TEMPLATES = ROOT / "templates" / "korea-exception"
RUNS = 5  # each figure is the median of this many (this VM varies by ~10% from run to run)

CONFIG = """
[sender]
name = "Bench Organizer"
email = "organizer@advocacy.example.org"
organization = "Bench Advocacy Network"

[delivery]
outbox_dir = "{outbox}"

[campaigns.bench]
contacts = "recipients.csv"
templates = "{templates}"
"""

# The mailmerge template: the row's columns turned into the same `member`
# our templates see, then the same paragraphs from _content.j2.
MAILMERGE_TEMPLATE = r"""{% import "_content.j2" as c -%}
{%- set senate = chamber == "senate" -%}
{%- set title = "Senator" if senate else ("Resident Commissioner" if state == "PR" else ("Delegate" if state in ["DC", "AS", "GU", "MP", "VI"] else "Representative")) -%}
{%- set codes = committees.split(";") -%}
{%- set m = {"is_senator": senate, "armed_services_committee": ("Senate" if senate else "House") ~ " Armed Services Committee",
             "foreign_affairs_committee": "Senate Foreign Relations Committee" if senate else "House Foreign Affairs Committee",
             "armed_services_role": "", "foreign_affairs_role": ""} -%}
{%- set asks = (c.senate_asks if senate else c.house_asks)
               + (c.armed_services_asks if "SSAS" in codes or "HSAS" in codes else [])
               + (c.foreign_affairs_asks if "SSFR" in codes or "HSFA" in codes else []) -%}
{%- set s = {"organization": "Bench Advocacy Network"} -%}
TO: "{{ full_name }}" <{{ email }}>
SUBJECT: End the Korea landmine exception and join the Mine Ban Treaty
FROM: Bench Organizer <organizer@advocacy.example.org>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="boundary"

--boundary
Content-Type: text/plain; charset=utf-8

The Honorable {{ full_name }}
{{ "United States Senate" if senate else "U.S. House of Representatives" }}
{{ office_address or "Washington, DC" }}

Dear {{ title }} {{ last_name }}:

{{ c.opening(m, s) | wordwrap(72) }}

{{ (c.role_senate if senate else c.role_house) | wordwrap(72) }}
{% if "SSAS" in codes or "HSAS" in codes %}

{{ c.armed_services(m) | wordwrap(72) }}
{% endif %}{% if "SSFR" in codes or "HSFA" in codes %}

{{ c.foreign_affairs(m) | wordwrap(72) }}
{% endif %}

{{ c.policy | wordwrap(72) }}

{{ c.need | wordwrap(72) }}

{{ c.allies | wordwrap(72) }}

{{ c.norm | wordwrap(72) }}

{{ c.asks_intro }}

{% for ask in asks %}  {{ loop.index }}. {{ ask | wordwrap(67) }}
{% endfor %}

{{ c.closing | wordwrap(72) }}

Sincerely,

Bench Organizer
Bench Advocacy Network
organizer@advocacy.example.org

--boundary
Content-Type: text/html; charset=utf-8

<html><body>
<p>The Honorable {{ full_name }}<br>{{ "United States Senate" if senate else "U.S. House of Representatives" }}<br>{{ office_address or "Washington, DC" }}</p>
<p>Dear {{ title }} {{ last_name }}:</p>
<p>{{ c.opening(m, s) }}</p>
<p>{{ c.role_senate if senate else c.role_house }}</p>
{% if "SSAS" in codes or "HSAS" in codes %}<p>{{ c.armed_services(m) }}</p>{% endif %}
{% if "SSFR" in codes or "HSFA" in codes %}<p>{{ c.foreign_affairs(m) }}</p>{% endif %}
<p>{{ c.policy }}</p>
<p>{{ c.need }}</p>
<p>{{ c.allies }}</p>
<p>{{ c.norm }}</p>
<p>{{ c.asks_intro }}</p>
<ol>{% for ask in asks %}<li>{{ ask }}</li>{% endfor %}</ol>
<p>{{ c.closing }}</p>
<p>Sincerely,</p>
<p>Bench Organizer<br>Bench Advocacy Network<br>organizer@advocacy.example.org</p>
</body></html>

--boundary--
"""

MAILMERGE_CONF = """[smtp_server]
host = localhost
port = 25
security = Never
username = bench
"""


def build_recipients(path: Path, n: int) -> None:
    with open(SHARED, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for i in range(n):
            row = dict(rows[i % len(rows)])
            if i >= len(rows):  # the real list first; beyond it, each office again at a numbered address
                local, domain = row["email"].split("@")
                row["email"] = f"{local}.{i}@{domain}"
            row["term_end"] = "2031-01-03"  # the bench is about speed, not the calendar
            w.writerow(row)


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    # Bytecode caches on, as for any installed copy: with PYTHONDONTWRITEBYTECODE set
    # (some shells and CI images set it) every run would compile our modules afresh.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    os.sync()  # what earlier runs wrote is on disk first, not written back during this one
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**base, **(env or {})})
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed


def render_only_rate(work: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from outreach.config import load_config
    from outreach.contacts import read_contacts
    from outreach.letters import TemplateSet

    cfg = load_config(work / "config.toml")
    contacts = read_contacts(work / "recipients.csv").contacts
    templates = TemplateSet(TEMPLATES, cfg.sender, "bench")
    templates.render(contacts[0])
    t0 = time.perf_counter()
    for c in contacts:
        templates.render(c)
    return len(contacts) / (time.perf_counter() - t0)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--python", action="append", default=[], help="another checkout's venv python")
    parser.add_argument("--no-mailmerge", action="store_true", help="leave mailmerge out (it takes ~30 s)")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"needs {SHARED}")
    pythons = [str(ROOT / ".venv" / "bin" / "python"), *args.python]
    mailmerge = shutil.which("mailmerge") or str(Path(sys.executable).with_name("mailmerge"))
    if not args.no_mailmerge and not Path(mailmerge).exists():
        sys.exit("mailmerge is not installed: pip install -e '.[bench]'")
    places = [("tmpfs", Path("/dev/shm"))] if Path("/dev/shm").is_dir() else []
    places.append(("disk", None))
    print(f"whole process, `outreach send` (a dry run); median of {RUNS} runs after one uncounted run")
    for n in (537, 10_000):
        with tempfile.TemporaryDirectory(dir=ROOT.parent if os.access(ROOT.parent, os.W_OK) else None) as tmp:
            work = Path(tmp)
            build_recipients(work / "recipients.csv", n)
            (work / "config.toml").write_text(CONFIG.format(templates=TEMPLATES, outbox=work / "outbox"))
            render = statistics.median(render_only_rate(work) for _ in range(RUNS))
            print(f"{n} recipients; render-only (subject, text, html): {n / render:.2f} s, {render:,.0f} rows/s")
            for label, base in places:
                for python in pythons:
                    checkout = Path(python).absolute().parents[2]
                    outbox = Path(tempfile.mkdtemp(dir=base)) if base else work / "outbox"
                    (work / "config.toml").write_text(CONFIG.format(templates=checkout / "templates" /
                                                                    "korea-exception", outbox=outbox))
                    command = [python, "-m", "outreach", "--config", str(work / "config.toml"), "send"]
                    timed(command, work)  # writes the bytecode caches, warms the disk
                    # Each run writes its own folder; nothing is deleted until the end (deleting
                    # 10,000 files keeps some disks busy for seconds, timed as the next run's).
                    runs = [timed(command, work) for _ in range(RUNS)]
                    seconds = statistics.median(runs)
                    print(f"  {label:6} {str(checkout):28} {seconds:6.2f} s ({min(runs):.2f}-{max(runs):.2f}), "
                          f"{n / seconds:7,.0f} rows/s, {n / seconds / render:4.0%} of render-only")
                    shutil.rmtree(outbox, ignore_errors=True)
            if n == 10_000 and not args.no_mailmerge:
                shutil.copy(TEMPLATES / "_content.j2", work / "_content.j2")
                (work / "mailmerge_template.txt").write_text(MAILMERGE_TEMPLATE)
                (work / "mailmerge_server.conf").write_text(MAILMERGE_CONF)
                theirs = timed([mailmerge, "--dry-run", "--no-limit", "--output-format", "raw",
                                "--template", "mailmerge_template.txt", "--database", "recipients.csv",
                                "--config", "mailmerge_server.conf"], work)
                print(f"  mailmerge --dry-run (prints to /dev/null): {theirs:.2f} s, {n / theirs:,.0f} rows/s")
    print("what a user would feel: > 0.2 s on 537 letters, > 1 s on 10,000")


if __name__ == "__main__":
    main()
