"""Email address checks: syntax only (no DNS), fast for long contact lists."""

from __future__ import annotations

import functools
import re

# An ASCII dot-atom local part (RFC 5322) is what nearly every real list holds;
# anything else goes through email-validator in full.
_SIMPLE_LOCAL = re.compile(r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")

# A plain domain: lower-case letter-digit-hyphen labels of 1 to 63 characters, no
# label starting or ending with a hyphen, no "--" anywhere (which leaves out Punycode
# and RFC 5890's reserved labels), an alphabetic top-level label. email-validator
# accepts every such domain unchanged unless it is a special-use name, and importing
# it costs ~20 ms (it compiles large Unicode patterns), so these skip it.
# tests/test_addresses.py holds this to what email-validator says.
_PLAIN_DOMAIN = re.compile(r"(?:[a-z0-9](?:-?[a-z0-9])*\.)+[a-z]{2,63}\Z")
_PLAIN_LABEL_MAX = 63
_PLAIN_DOMAIN_MAX = 250  # shorter than any limit email-validator applies to "a@" + domain
# email-validator's SPECIAL_USE_DOMAIN_NAMES (RFC 6761 and kin): left to it in full.
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_domain(domain: str) -> bool:
    return (len(domain) <= _PLAIN_DOMAIN_MAX and _PLAIN_DOMAIN.match(domain) is not None
            and domain.rpartition(".")[2] not in _SPECIAL_USE
            and all(len(label) <= _PLAIN_LABEL_MAX for label in domain.split(".")))


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str | None, str | None]:
    """(normalised domain, None) or (None, reason); one full check per distinct domain."""
    if _plain_domain(domain):
        return domain, None
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError as e:
        return None, str(e)
    return result.domain, None


def normalise_email(value: str) -> tuple[str | None, str | None]:
    """('local@domain' with the domain lower-cased, None) or (None, reason it is not valid)."""
    local, at, domain = value.rpartition("@")
    if at and local and len(local) <= 64 and len(value) <= 254 and _SIMPLE_LOCAL.match(local):
        norm_domain, reason = _check_domain(domain)
        if norm_domain is not None:
            return f"{local}@{norm_domain}", None
        return None, reason
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as e:
        return None, str(e)
    return result.normalized, None


def check_email(value: str) -> str | None:
    """None when `value` is a valid address, else the reason it is not."""
    return normalise_email(value)[1]
