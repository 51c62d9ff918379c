"""Secrets out of anything printed or logged: URLs lose their password, texts their URL passwords."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_QUERY_SECRET = re.compile(r"(?P<key>(?:password|passwd|pwd|token|secret|sasl_password)=)[^&\s]+", re.I)


def redact_url(url: str) -> str:
    """The URL with its password (and password-like query values) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return _QUERY_SECRET.sub(r"\g<key>***", url)


def redact_text(text: str) -> str:
    """Any URL passwords and password-like key=value pairs in a free text (error messages) replaced by ***."""
    return _QUERY_SECRET.sub(r"\g<key>***", _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text))
