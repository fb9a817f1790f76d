"""Names and label values derived from a ModelDeployment, within Kubernetes' length limits."""

from __future__ import annotations

import hashlib
import re

from ferry_operator.spec import ModelDeployment

MAX_NAME_LENGTH = 63
_HASH_LENGTH = 8
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def _shorten(text: str, original: str) -> str:
    """Cut ``text`` to fit 63 characters together with a hash of ``original``."""
    head = text[: MAX_NAME_LENGTH - _HASH_LENGTH - 1].rstrip("-._")
    return f"{head}-{_digest(original)}"


def dns_label_name(name: str) -> str:
    """A DNS-1035 label (Service names need one) for ``name``; unchanged when it already is.

    A ModelDeployment name is a DNS-1123 subdomain (up to 253 characters, dots allowed); other
    names get their dots replaced, a letter prefix when they start with a digit, and a hash of
    the original name so that distinct names stay distinct.
    """
    if len(name) <= MAX_NAME_LENGTH and _DNS_1035_LABEL.match(name):
        return name
    text = name.replace(".", "-")
    if not text[:1].isalpha():
        text = f"md-{text}"
    return _shorten(text, name)


def label_value(value: str) -> str:
    """A valid label value (at most 63 characters) for ``value``; unchanged when it fits."""
    if len(value) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(value):
        return value
    text = re.sub(r"[^-A-Za-z0-9_.]", "-", value).strip("-._") or "x"
    return _shorten(text, value)


def child_name(md: ModelDeployment) -> str:
    """The name every child of ``md`` shares (Deployment, Service, HPA, PDB)."""
    return dns_label_name(md.metadata.name)
