"""Value rules that need nothing but `re`: the VNI range and endpoint DNS names.

Apart from model.py (which re-exports them) so that overlayctl checks a name without importing the
model's dataclasses and hashing: every attach pays for what its process imports (docs/performance.md).
"""

from __future__ import annotations

import re

from overlaynet.errors import BadRequest

MIN_VNI = 1
MAX_VNI = 0xFFFFFF
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_DNS_NAME = 253
MAX_NAMES = 32


def validate_dns_name(name: object) -> str:
    """A DNS name for an endpoint: dot-separated labels of 1-63 letters, digits or hyphens (not at
    either end of a label), at most 253 characters; returned lower-case (DNS is case-insensitive)."""
    if isinstance(name, str):
        value = name.lower()
        value = value[:-1] if value.endswith(".") else value  # a fully qualified "web." is "web"
        labels = value.split(".")
        if 0 < len(value) <= MAX_DNS_NAME and all(DNS_LABEL_RE.match(label) for label in labels):
            return value
    raise BadRequest(
        f"invalid DNS name {name!r}: use labels of 1-63 letters, digits or '-' (not first or last), "
        "separated by dots, e.g. web or db.backend"
    )


def validate_dns_names(names: object) -> list[str]:
    """A list of endpoint names, validated, lower-cased, duplicates removed (order kept)."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise BadRequest("names must be a JSON list of DNS names, e.g. [\"web\"]")
    if len(names) > MAX_NAMES:
        raise BadRequest(f"too many names: at most {MAX_NAMES} per endpoint")
    out: list[str] = []
    for name in names:
        value = validate_dns_name(name)
        if value not in out:
            out.append(value)
    return out


def usable_dns_names(candidates: list[str]) -> list[str]:
    """The candidates (a container's name, its aliases) that are valid DNS names, lower-cased,
    without duplicates, at most MAX_NAMES: the rest are skipped, not refused (Compose's `proj_web_1`
    is no DNS name; its service name `web` is)."""
    out: list[str] = []
    for name in candidates:
        try:
            value = validate_dns_name(name)
        except BadRequest:
            continue
        if value not in out:
            out.append(value)
    return out[:MAX_NAMES]
