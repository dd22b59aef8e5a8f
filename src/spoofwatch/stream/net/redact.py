"""Keep credentials out of logs, including the HTTP library's.

The server's request lines carry ``?token=``, its headers ``Authorization`` and
``X-API-KEY``, a Twilio start message its token. aiohttp's own access log would print
each request line, so the server replaces it with ``RedactingAccessLogger`` (DEBUG, the
query's credentials masked), and ``RedactingFilter`` on aiohttp's loggers masks
credentials in headers, query strings and JSON fields and every configured secret
wherever it still appears in a record, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from spoofwatch.config import REDACTED

SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"}
)
_HEADER_LINE: Final = re.compile(r"^([<>] )([A-Za-z0-9-]+)(: )(.*)$", re.S)
_QUERY_SECRET: Final = re.compile(r"([?&](?:token|access_token|api_key|apikey|password)=)[^&\s#]*", re.I)
_JSON_SECRET: Final = re.compile(
    r'("(?:token|password|api_key|apikey|apiKey|secret)"\s*:\s*")(?:[^"\\]|\\.)*', re.I
)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credential-looking parts and every non-empty secret masked."""
    match = _HEADER_LINE.match(text)
    if match and match.group(2).lower() in SENSITIVE_HEADERS:
        text = f"{match.group(1)}{match.group(2)}{match.group(3)}{REDACTED}"
    text = _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", text)
    text = _JSON_SECRET.sub(rf"\g<1>{REDACTED}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logger filter that rewrites each record so it carries none of the secrets it was
    given nor anything that looks like a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (record.msg, *(record.args or ())))
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.msg, record.args = redact_text(text, self.secrets), ()
        return True


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log at DEBUG, with the query's credentials masked."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        self.logger.debug(
            "%s %s %s %d %.3fs",
            request.remote,
            request.method,
            redact_text(request.raw_path),
            response.status,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)
