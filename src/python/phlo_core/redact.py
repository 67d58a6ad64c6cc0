"""Credentials out of text: user names and passwords in URLs never reach a log, error or event.

Settings refuse URLs that carry them; this is the second line, applied to every message that
may quote a URL a user or a server supplied (a redirect's Location, a DSN in a driver error).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Up to the LAST `@` before the path: a password may itself contain `@`.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"]*@")
# key=value DSN fields that carry a secret (libpq style: `password=...`, quoted or not).
_DSN_SECRET = re.compile(
    r"(?P<key>\b(?:password|secret|token)\s*=\s*)(?:'[^']*'|\"[^\"]*\"|[^\s'\"]+)",
    re.IGNORECASE,
)


# Secret values known to this process (an object store's secret key, passwords): masked
# wherever they appear, whatever the text around them looks like.
_known: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` in every later `redact` (values shorter than 4 characters are not
    secrets worth the false hits)."""
    if value and len(value) >= 4:
        _known.add(value)


def redact(text: str) -> str:
    """`text` with URL userinfo, DSN passwords and registered secrets replaced by `***`."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _DSN_SECRET.sub(r"\g<key>***", text)


def dsn_password(dsn: str) -> str | None:
    """The password of a libpq key=value DSN or of a URL with userinfo, if it has one."""
    match = re.search(r"\bpassword\s*=\s*('[^']*'|\"[^\"]*\"|[^\s'\"]+)", dsn, re.IGNORECASE)
    if match:
        return match.group(1).strip("'\"")
    if "://" in dsn:
        return urlsplit(dsn).password
    return None


def has_userinfo(url: str) -> bool:
    """Whether `url` carries credentials: userinfo, or any '@' before its query. Parsers cut a
    password holding '/' differently ('https://u:p/w@host' has no userinfo for urlsplit, whose
    path then holds the password's tail), so an '@' there is taken as one."""
    parts = urlsplit(url)
    before_query = url.split("?", 1)[0].split("#", 1)[0]
    return parts.username is not None or parts.password is not None or "@" in before_query


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, without userinfo, path or query; a default port is
    left out, so `https://h:443` and `https://h` are the same origin."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port if parts.port != _DEFAULT_PORTS.get(parts.scheme) else None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def same_site(configured: str, target: str) -> bool:
    """Whether credentials meant for `configured` may go to `target`: the same origin, or the
    same host upgraded from http to https on default ports."""
    if origin(configured) == origin(target):
        return True
    return origin(configured).replace("http://", "https://", 1) == origin(target) and (
        origin(configured).startswith("http://")
    )
