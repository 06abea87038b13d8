"""How an exception or a rejected result is described on spans: `error.type`, exception events, redaction."""

from __future__ import annotations

import re
import traceback
from typing import Final

from otel_resilience import semconv

_type_names: dict[type, str] = {}

# Credentials in URLs (`scheme://user:pass@host`) and the query parameters the HTTP semantic conventions name as
# sensitive. Messages pass through the same redaction as URLs: an exception message often quotes the URL it failed on.
_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
SENSITIVE_QUERY_PARAMS: Final = ("AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature")
_QUERY: Final = re.compile(r"(?P<key>[?&](?:" + "|".join(SENSITIVE_QUERY_PARAMS) + r")=)[^&#\s'\"]*")
REDACTED: Final = "REDACTED"


def redact(text: str) -> str:
    """Remove credentials and sensitive query values from a URL or a message that may contain URLs. Each pattern
    runs only when its marker is there (``@`` for credentials, ``=`` for query values): every HTTP attempt's URL
    passes through here."""
    if "@" in text:
        text = _USERINFO.sub(rf"\g<scheme>{REDACTED}:{REDACTED}@", text)
    if "=" in text:
        text = _QUERY.sub(rf"\g<key>{REDACTED}", text)
    return text


def error_type(exc: BaseException) -> str:
    """`error.type` of an exception: its ``module.QualName``, bare for builtins (cached per class)."""
    cls = type(exc)
    name = _type_names.get(cls)
    if name is None:
        module = cls.__module__
        name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
        _type_names[cls] = name
    return name


def exception_attributes(exc: BaseException, *, stacktrace: bool) -> dict[str, str]:
    """Attributes of an ``exception`` event. Formatting a stacktrace costs as much as several spans, so callers ask
    for it only where the configured policy wants it (by default once, on the operation's final failure)."""
    attributes = {
        semconv.EXCEPTION_TYPE: error_type(exc),
        semconv.EXCEPTION_MESSAGE: redact(str(exc)),
    }
    if stacktrace:
        attributes[semconv.EXCEPTION_STACKTRACE] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        )
    return attributes

