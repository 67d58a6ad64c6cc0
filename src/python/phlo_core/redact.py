"""Credentials out of text: user names and passwords in URLs never reach a log, error or event.

Settings refuse URLs that carry them; this is the second line, applied to every message that
may quote a URL a user or a server supplied (a redirect's Location, a DSN in a driver error).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]*@")
# key=value DSN fields that carry a secret (libpq style: `password=...`).
_DSN_SECRET = re.compile(r"(?P<key>\b(?:password|secret|token)\s*=\s*)[^\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with URL userinfo and DSN passwords replaced by `***`."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _DSN_SECRET.sub(r"\g<key>***", text)


def has_userinfo(url: str) -> bool:
    parts = urlsplit(url)
    return parts.username is not None or parts.password is not None


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without userinfo, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))
