"""Email addresses: our shortcut for plain domains agrees with email-validator, which checks the rest."""

from __future__ import annotations

import csv
import random
import subprocess
import sys

import email_validator
import pytest

from conftest import ROOT
from outreach.addresses import _SPECIAL_USE, _check_domain, _plain_domain, normalise_email


def library(domain: str) -> str | None:
    """email-validator's normalised domain, or None when it rejects it."""
    try:
        return email_validator.validate_email(f"a@{domain}", check_deliverability=False).domain
    except email_validator.EmailNotValidError:
        return None


EDGE_CASES = [
    "senate.gov", "house.gov", "advocacy.example.org", "mail.co.uk", "123.example.com", "a.bc",
    "x-y.example.org", "a-b-c.d-e.org", "-lead.example.org", "trail-.example.org", "ab--cd.example.org",
    "xn--bcher-kva.example", "example.123", "example.c0m", "example.c", "example", "example.org.",
    ".example.org", "exa..mple.org", "Example.ORG", "münchen.de", "example.org ", "exam_ple.org",
    "a" * 63 + ".org", "a" * 64 + ".org", ("a" * 60 + ".") * 4 + "org", ("a" * 61 + ".") * 4 + "org",
    "example.localhost", "localhost.example.org", "my.local", "a.b.onion", "x.invalid", "e.arpa", "box.test",
]


@pytest.mark.parametrize("domain", EDGE_CASES)
def test_shortcut_accepts_only_what_email_validator_accepts_unchanged(domain):
    if _plain_domain(domain):
        assert library(domain) == domain
    # Whichever path a domain takes, the verdict and the normal form are the library's.
    assert _check_domain.__wrapped__(domain)[0] == library(domain)


def test_shortcut_agrees_with_email_validator_on_random_domains():
    rng = random.Random(20261201)
    alphabet = "ab1-.z9"
    taken = 0
    for _ in range(4000):
        domain = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14))) + rng.choice(
            ["", ".org", ".gov", ".a", ".io", ".t3st", ".test", ".local"])
        if _plain_domain(domain):
            taken += 1
            assert library(domain) == domain, domain
    assert taken > 400  # the sample does exercise the shortcut


def test_special_use_names_mirror_email_validator():
    assert set(email_validator.SPECIAL_USE_DOMAIN_NAMES) <= _SPECIAL_USE


def test_plain_domains_take_the_shortcut():
    for domain in ("senate.gov", "house.gov", "advocacy.example.org", "mail.state.ak.us"):
        assert _plain_domain(domain), domain
    assert normalise_email("Dan.Sullivan@senate.gov") == ("Dan.Sullivan@senate.gov", None)
    assert normalise_email("dan@Senate.GOV") == ("dan@senate.gov", None)  # through the library


def test_shared_contact_domains_agree_with_email_validator(shared):
    with open(shared / "congress" / "contacts-congress.csv", encoding="utf-8", newline="") as f:
        domains = {row["email"].rpartition("@")[2] for row in csv.DictReader(f)}
    for domain in domains:
        assert _check_domain.__wrapped__(domain)[0] == library(domain), domain


def test_a_dry_run_of_plain_addresses_does_not_load_email_validator(tmp_path):
    # Loading it costs ~20 ms of start-up for every command that reads a config.
    code = ("import sys; from outreach.config import load_config; from outreach.contacts import read_contacts; "
            f"load_config({str(ROOT / 'config.toml')!r}); read_contacts({str(ROOT / 'contacts' / 'sample.csv')!r}); "
            "print('email_validator' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "False"
