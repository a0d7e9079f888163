"""Email address checks: syntax only (no DNS), fast for long contact lists."""

from __future__ import annotations

import functools
import re

# An ASCII dot-atom local part (RFC 5322) is what nearly every real list holds;
# anything else goes through email-validator in full.
_SIMPLE_LOCAL = re.compile(r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*\Z")


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str | None, str | None]:
    """(normalised domain, None) or (None, reason); one full check per distinct domain."""
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
