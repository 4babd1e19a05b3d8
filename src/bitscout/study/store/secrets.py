"""Credentials of a storage URL kept out of everything bitscout shows: the URL itself
(`mask_password`) and every message that can carry it (`scrub`: a driver's error, a worker's
last line). SQLAlchemy is imported only when a URL is parsed."""

import contextlib
import re
from typing import Any

_IN_URL = re.compile(r"(://)[^\s'\"]*@")  # a URL's credentials, up to its last '@'


def _credentials(url: str) -> tuple[Any, str | None]:
    """SQLAlchemy's parse of `url` and its password. A raw '@' inside a password (it should be
    written %40) makes SQLAlchemy split at the first '@'; the host then holds the rest of the
    password, which is moved back."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    host, password = parsed.host, parsed.password
    if host and "@" in host and password is not None:
        extra, host = host.rsplit("@", 1)
        password = f"{password}@{extra}"
        parsed = parsed.set(host=host, password=password)
    return parsed, password


def mask_password(url: str) -> str:
    """`url` with any password shown as `***` (`postgresql://user:***@host/db`)."""
    if "://" not in url:
        return url
    try:
        parsed, password = _credentials(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: hide all credentials
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else url
    return url if password is None else parsed.render_as_string(hide_password=True)


def _secrets(url: str) -> list[str]:
    """What of `url` must never be shown: everything between `://` and its last `@`, and
    every piece of it a driver may print on its own. A raw `@` in a password makes a driver
    take the text after it for the host (`failed to resolve host 'ss@127.0.0.1'`), so each
    such tail is a secret where an `@` follows it; so is the password as SQLAlchemy reads it."""
    rest = url.partition("://")[2]
    if "@" not in rest:
        return []
    userinfo = rest.rsplit("@", 1)[0]
    tails = [userinfo[i + 1 :] + "@" for i, c in enumerate(userinfo) if c in "@:"]
    password = None
    with contextlib.suppress(Exception):
        password = _credentials(url)[1]
    return [s for s in (userinfo, *tails, password) if s and s != "@"]


def scrub(text: str, url: str | None = None) -> str:
    """`text` (a driver's error, a traceback line) with no credentials left: in any URL it
    holds, everything between `://` and the last `@` becomes `***`, and so does every secret
    of `url` (the storage the text is about) wherever it appears. Every message made from a
    storage error goes through here."""
    text = _IN_URL.sub(r"\1***@", text)
    for secret in sorted(_secrets(url) if url else [], key=len, reverse=True):
        masked = "***@" if secret.endswith("@") else "***"
        text = text.replace(secret, masked)
    return text
