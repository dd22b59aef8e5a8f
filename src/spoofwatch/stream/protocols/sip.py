"""SIP (RFC 3261) for the SIPREC recording server: framing, checks, responses. No I/O.

Parsing and serialising one message is ``sipmessage``'s (a typed, maintained pure-Python
SIP message library: Spacinov's, https://github.com/spacinov/sipmessage). What it leaves
to its caller lives here: cutting a TCP byte stream into messages by ``Content-Length``,
size limits before anything is parsed, unfolding continuation lines, the headers a
request must carry, and the responses a server builds from a request (RFC 3261 8.2.6).

A message this module refuses raises ``SipError`` with the status to answer: 400
(malformed), 413 (body too large), 513 (message too large). A refused TCP stream cannot
be resynchronised, so the connection is closed after that answer.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final

from sipmessage import URI, Address, CSeq, Message, Request, Response, Via

from spoofwatch.errors import ProtocolError

MAX_MESSAGE_BYTES: Final = 64 * 1024  # a UDP datagram's limit; a SIPREC INVITE is ~4 KiB
MAX_BODY_BYTES: Final = 32 * 1024
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_HEADERS: Final = 100
REQUIRED_HEADERS: Final = ("Via", "From", "To", "Call-ID", "CSeq")
MAX_CALL_ID_CHARS: Final = 128
SERVER_NAME: Final = "spoofwatch-siprec"

REASONS: Final = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    513: "Message Too Large",
}

# Methods this server acts on, and those it knows but refuses with 405.
HANDLED_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
KNOWN_METHODS: Final = (
    *HANDLED_METHODS,
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "INFO",
    "UPDATE",
    "PRACK",
    "PUBLISH",
)
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*$", re.I | re.M)


class SipError(ProtocolError):
    """A message refused with ``status``; the text says what was expected."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class SipRequest:
    """A parsed request and the headers every handler needs."""

    message: Request
    call_id: str
    cseq: CSeq
    from_tag: str | None
    to_tag: str | None

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def body(self) -> bytes:
        return self.message.body


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """(start line and headers, body); SipError(400) without the blank line between."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipError(400, "SIP message: expected headers ending in an empty line (CRLF CRLF), found none")
    return head, body


def _unfold(head: bytes) -> bytes:
    """RFC 3261 7.3.1: a line starting with white space continues the previous one."""
    return re.sub(rb"\r\n[ \t]+", b" ", head)


def parse_message(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> SipRequest | Response:
    """One complete message (a UDP datagram, or a framed TCP message)."""
    if len(data) > max_bytes:
        raise SipError(513, f"SIP message: expected at most {max_bytes} bytes, found {len(data)}")
    head, body = split_head(data)
    if len(head) > MAX_HEADER_BYTES:
        raise SipError(513, f"SIP headers: expected at most {MAX_HEADER_BYTES} bytes, found {len(head)}")
    head = _unfold(head)
    if head.count(b"\r\n") >= MAX_HEADERS:
        raise SipError(400, f"SIP headers: expected at most {MAX_HEADERS} lines, found more")
    declared = declared_length(head)
    if declared is not None:
        if declared > len(body):
            raise SipError(400, f"SIP body: expected Content-Length {declared} bytes, found only {len(body)}")
        body = body[:declared]  # UDP: bytes past Content-Length are not part of the message
    if len(body) > MAX_BODY_BYTES:
        raise SipError(413, f"SIP body: expected at most {MAX_BODY_BYTES} bytes, found {len(body)}")
    try:
        message = Message.parse(head + b"\r\n\r\n" + body)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise SipError(400, f"SIP message: expected RFC 3261 syntax, found {_short(exc)}") from None
    if isinstance(message, Response):
        return message
    return _checked_request(message)


def _checked_request(message: Request) -> SipRequest:
    if not _TOKEN.match(message.method):
        raise SipError(400, f"SIP method: expected a token, found {message.method[:32]!r}")
    missing = [h for h in REQUIRED_HEADERS if message.headers.get(h) is None]
    if missing:
        raise SipError(400, f"SIP request: expected headers {list(REQUIRED_HEADERS)}, missing {missing}")
    try:
        cseq = message.cseq
        from_address = message.from_address
        to_address = message.to_address
        vias = message.via
    except (ValueError, KeyError) as exc:
        raise SipError(
            400, f"SIP request headers: expected valid From, To, CSeq and Via ({_short(exc)})"
        ) from None
    if not vias:
        raise SipError(400, "SIP request: expected a Via header, found none")
    if cseq.method != message.method:
        raise SipError(400, f"SIP CSeq: expected method {message.method}, found {cseq.method}")
    call_id = message.call_id
    if not call_id or len(call_id) > MAX_CALL_ID_CHARS or any(c.isspace() for c in call_id):
        raise SipError(400, f"SIP Call-ID: expected 1..{MAX_CALL_ID_CHARS} characters without spaces")
    return SipRequest(
        message,
        call_id,
        cseq,
        from_address.parameters.get("tag"),
        to_address.parameters.get("tag"),
    )


def declared_length(head: bytes) -> int | None:
    match = _CONTENT_LENGTH.search(head)
    return int(match.group(1)) if match else None


def _short(exc: BaseException) -> str:
    return (str(exc) or exc.__class__.__name__)[:120]


class SipStreamFramer:
    """Cuts a TCP (or TLS) byte stream into SIP messages by Content-Length (RFC 3261 18.3).

    CRLF keep-alives (RFC 5626 3.5.1) between messages are skipped. ``SipError`` means the
    stream cannot be resynchronised: answer it, then close the connection."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self.keepalives = 0

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def buffered(self) -> bytes:
        """What is held of a message not yet complete (to answer a refused one)."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            if len(stripped) != len(self._buffer):
                self.keepalives += 1
                self._buffer = bytearray(stripped)
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise SipError(513, f"SIP headers: expected at most {MAX_HEADER_BYTES} bytes, found more")
                return messages
            head = bytes(self._buffer[:end])
            length = declared_length(_unfold(head))
            if length is None:
                raise SipError(400, "SIP over TCP: expected a Content-Length header, found none")
            total = end + 4 + length
            if total > self.max_bytes:
                raise SipError(513, f"SIP message: expected at most {self.max_bytes} bytes, found {total}")
            if len(self._buffer) < total:
                return messages
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


def new_tag() -> str:
    return secrets.token_hex(8)


def response(
    request: SipRequest,
    status: int,
    *,
    to_tag: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> bytes:
    """A response to ``request`` (RFC 3261 8.2.6.2): Via, From, Call-ID and CSeq copied,
    our tag added to To (except on 100 Trying), Content-Length set."""
    return build_response(
        request.message, status, to_tag=to_tag, headers=headers, body=body, content_type=content_type
    )


def build_response(
    request: Request,
    status: int,
    *,
    to_tag: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> bytes:
    reply = Response(status, REASONS.get(status, "Unknown"), body)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.getlist(name):
            reply.headers.add(name, value)
    to_value = request.headers.get("To")
    if to_tag and status > 100 and to_value is not None and ";tag=" not in to_value.replace(" ", ""):
        reply.headers.set("To", f"{to_value};tag={to_tag}")
    reply.headers.add("Server", SERVER_NAME)
    for name, value in (headers or {}).items():
        reply.headers.add(name, value)
    if content_type is not None:
        reply.headers.add("Content-Type", content_type)
    reply.headers.add("Content-Length", str(len(body)))
    return bytes(reply)


def error_response(data: bytes, status: int, reason_text: str) -> bytes | None:
    """A response to a request that failed to parse, if enough of it can be read to
    answer (its Via, From, To, Call-ID and CSeq); None otherwise (a datagram of garbage
    gets no answer)."""
    try:
        head, _ = split_head(data[: MAX_HEADER_BYTES + 4])
        lines = _unfold(head).decode("utf-8").split("\r\n")
    except (SipError, UnicodeDecodeError):
        return None
    start = lines[0].split(" ")
    if len(start) != 3 or start[2] != "SIP/2.0":
        return None
    request = Request(start[0][:32], _dummy_uri())
    for line in lines[1:MAX_HEADERS]:
        name, sep, value = line.partition(":")
        canonical = _canonical_header(name.strip())
        if sep and canonical:
            request.headers.add(canonical, value.strip())
    if any(request.headers.get(h) is None for h in REQUIRED_HEADERS):
        return None
    try:
        _ = request.via  # a response is routed by its Via: it must parse
    except ValueError:
        return None
    warning = reason_text.replace('"', "'")[:200]
    return build_response(request, status, headers={"Warning": f'399 spoofwatch "{warning}"'})


_COMPACT: Final = {"v": "Via", "f": "From", "t": "To", "i": "Call-ID"}


def _canonical_header(name: str) -> str | None:
    lower = name.lower()
    lower = _COMPACT.get(lower, lower).lower()
    for header in REQUIRED_HEADERS:
        if header.lower() == lower:
            return header
    return None


def _dummy_uri() -> URI:
    return URI.parse("sip:invalid")


def via_address(request: SipRequest) -> tuple[str, int] | None:
    """Where the top Via asks responses to go (``received``/``rport`` when present)."""
    vias = request.message.via
    if not vias:
        return None
    top: Via = vias[0]
    host = top.parameters.get("received") or top.host
    rport = top.parameters.get("rport")
    port = int(rport) if rport and rport.isdigit() else (top.port or 5060)
    return host.strip("[]"), port


def contact_uri(request: SipRequest) -> str | None:
    contacts: list[Address] = request.message.contact
    return str(contacts[0].uri) if contacts else None
