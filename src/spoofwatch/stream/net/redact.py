"""Keep credentials out of logs, including the ``websockets`` library's DEBUG lines.

At DEBUG, ``websockets`` logs each request line (``?token=`` included), every header
(``Authorization``, ``X-API-KEY``) and the first bytes of every frame (a Twilio start
message carries its token). ``RedactingLogger`` wraps the logger the server hands to
``websockets``: it formats each record itself, masks credentials in headers, query
strings and JSON fields, shows data frames as their type and length only, and masks
every configured secret wherever it still appears, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

from websockets.frames import Frame, Opcode

from spoofwatch.config import REDACTED

SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"}
)
_HEADER_LINE: Final = re.compile(r"^([<>] )([A-Za-z0-9-]+)(: )(.*)$", re.S)
_QUERY_SECRET: Final = re.compile(r"([?&](?:token|access_token|api_key|apikey|password)=)[^&\s#]*", re.I)
_JSON_SECRET: Final = re.compile(
    r'("(?:token|password|api_key|apikey|apiKey|secret)"\s*:\s*")(?:[^"\\]|\\.)*', re.I
)
_DATA_OPCODES: Final = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


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


def _safe_arg(arg: object) -> object:
    if isinstance(arg, Frame) and arg.opcode in _DATA_OPCODES:
        return f"{arg.opcode.name} frame [{len(arg.data)} bytes]"
    return arg


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter whose records never carry the secrets it was given."""

    def __init__(self, logger: logging.Logger, secrets: Iterable[str] = ()) -> None:
        super().__init__(logger, {})
        self.secrets = tuple(s for s in secrets if s)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        safe_args = tuple(_safe_arg(a) for a in args)
        try:
            text = str(msg) % safe_args if safe_args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *safe_args))
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            if isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if isinstance(exc_info, tuple) and exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        kwargs.pop("stack_info", None)
        extra = kwargs.pop("extra", None)
        self.logger.log(
            level,
            "%s",
            redact_text(text, self.secrets),
            extra=extra if isinstance(extra, Mapping) else None,
            stacklevel=kwargs.pop("stacklevel", 1) + 1,
        )
