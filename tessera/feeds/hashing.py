"""Hashed audiences: identifiers normalised the way each ad platform documents, then
SHA-256 (lower-case hex).

Why per kind rather than one rule: the platforms disagree. Meta wants a phone as digits
with the country code and no ``+``; Google Customer Match wants E.164 with the ``+``;
Google also drops the dots of a gmail.com / googlemail.com local part. A hash made with
the wrong rule matches nobody, silently. The SQL expressions (for the engine) and the
Python functions (the reference the tests and a receiver use) implement the same rules.
"""

from __future__ import annotations

import hashlib
import re

from tessera.engine.dialect import sha256_hex

_GMAIL = ("gmail.com", "googlemail.com")


def normalise_email(value: str) -> str:
    return value.strip().lower()


def normalise_email_google(value: str) -> str:
    email = normalise_email(value)
    local, at, domain = email.rpartition("@")
    if at and domain in _GMAIL:
        return local.replace(".", "") + "@" + domain
    return email


def normalise_phone(value: str) -> str:
    """Digits only, leading zeros dropped (Meta); the value must carry its country code."""
    return re.sub(r"[^0-9]", "", value).lstrip("0")


def normalise_phone_e164(value: str) -> str:
    digits = normalise_phone(value)
    return "+" + digits if digits else ""


NORMALISERS = {"email": normalise_email, "email_google": normalise_email_google,
               "phone": normalise_phone, "phone_e164": normalise_phone_e164}


def hash_identifier(kind: str, value: str | None) -> str | None:
    """The platform hash of one identifier (None for a missing or empty one)."""
    if value is None:
        return None
    norm = NORMALISERS[kind](value)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest() if norm else None


def normalised_sql(kind: str, expr: str) -> str:
    """SQL normalising ``expr`` like :data:`NORMALISERS` (NULL for an empty result)."""
    e = f"lower(trim(CAST({expr} AS VARCHAR)))"
    if kind == "email":
        out = e
    elif kind == "email_google":
        out = (f"CASE WHEN split_part({e}, '@', 2) IN ('gmail.com', 'googlemail.com') "
               f"THEN replace(split_part({e}, '@', 1), '.', '') || '@' || split_part({e}, '@', 2) "
               f"ELSE {e} END")
    elif kind in ("phone", "phone_e164"):
        digits = f"ltrim(regexp_replace(CAST({expr} AS VARCHAR), '[^0-9]', '', 'g'), '0')"
        out = digits if kind == "phone" else f"'+' || {digits}"
        return f"CASE WHEN {digits} = '' THEN NULL ELSE {out} END"
    else:
        raise ValueError(f"unknown hash kind {kind!r}")
    return f"nullif({out}, '')"


def hashed_sql(kind: str, expr: str) -> str:
    """SQL of the platform hash of ``expr`` (lower-case hex SHA-256, NULL stays NULL)."""
    return sha256_hex(normalised_sql(kind, expr))
