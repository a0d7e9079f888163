"""SendGrid's signed posts (the Event Webhook, and Inbound Parse under a security policy).

Both are signed the same way: ECDSA P-256 with SHA-256 over the timestamp header's text
followed by the raw body bytes, the base64 DER signature in a header beside it. Each has its
own key, from the environment.
"""

from __future__ import annotations

import base64
import binascii
import os

from outreach.errors import UserError

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Our clock and SendGrid's may disagree by a little; a timestamp further ahead is refused.
FUTURE_SKEW_S = 30.0


def load_public_key(text: str):
    """An ECDSA P-256 public key from base64 DER (as SendGrid shows it) or PEM; ValueError if it is not one."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a public key ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("a public key, but not ECDSA P-256")
    return key


def key_from_env(env: str, what: str):
    """The public key in $env (base64 DER or PEM); UserError naming the variable if it is not one."""
    text = os.environ.get(env, "").strip()
    try:
        return load_public_key(text)
    except ValueError as e:
        raise UserError(f"${env} does not hold {what}: {e}; paste the key as SendGrid shows it (base64) "
                        "or as PEM") from None


def verify_signature(public_key, signature_b64: str, timestamp: str, body: bytes) -> bool:
    """True if the base64 DER ECDSA signature covers timestamp + body exactly."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def timestamp_problem(timestamp: str, now: float, max_age_s: float) -> str | None:
    """Why a signed timestamp is refused (too old: a replay; ahead of us; not a number), or None."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "the timestamp header is not UNIX seconds"
    age = now - int(timestamp)
    if age > max_age_s:
        return f"the signed timestamp is {age:.0f} s old (more than {max_age_s:g} s)"
    if age < -FUTURE_SKEW_S:
        return f"the signed timestamp is {-age:.0f} s in the future"
    return None
