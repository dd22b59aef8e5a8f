"""SIPREC (RFC 7866) bodies: multipart/mixed SDP + ``application/rs-metadata+xml``, and
the recording metadata (RFC 7865) that names each stream's party. No I/O.

MIME multipart parsing is the standard library's ``email`` package; the XML is
``xml.etree.ElementTree`` on expat (2.4.1 and later refuse entity-expansion bombs), and a
document type declaration is refused outright: rs-metadata has none, so one in a body is
an attack, not a recording.
"""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final

from spoofwatch.stream.protocols.sip import SipError

SDP_TYPE: Final = "application/sdp"
METADATA_TYPE: Final = "application/rs-metadata+xml"
MULTIPART_TYPE: Final = "multipart/mixed"
ACCEPTED_TYPES: Final = (SDP_TYPE, METADATA_TYPE, MULTIPART_TYPE)
MAX_PARTS: Final = 8
NAMESPACE: Final = "urn:ietf:params:xml:ns:recording:1"
MAX_FIELD_CHARS: Final = 128


@dataclass(frozen=True)
class SiprecBody:
    sdp: bytes | None
    metadata: bytes | None


def split_body(content_type: str | None, body: bytes) -> SiprecBody:
    """The SDP and metadata parts of a request body; SipError 415 for other content types."""
    if not body:
        return SiprecBody(None, None)
    if content_type is None:
        raise SipError(400, "SIP body: expected a Content-Type header with the body, found none")
    main = content_type.split(";")[0].strip().lower()
    if main == SDP_TYPE:
        return SiprecBody(body, None)
    if main == METADATA_TYPE:
        return SiprecBody(None, body)
    if main != MULTIPART_TYPE:
        raise SipError(415, f"SIP body: expected one of {list(ACCEPTED_TYPES)}, found {main[:60]!r}")
    if "boundary" not in content_type.lower():
        raise SipError(400, "multipart/mixed body: expected a boundary parameter, found none")
    envelope = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    try:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(envelope)
    except (ValueError, TypeError, IndexError) as exc:
        raise SipError(
            400, f"multipart/mixed body: expected MIME parts, found unparseable data ({exc})"
        ) from None
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise SipError(400, "multipart/mixed body: expected MIME parts separated by the boundary, found none")
    parts = list(message.iter_parts())
    if len(parts) > MAX_PARTS:
        raise SipError(400, f"multipart/mixed body: expected at most {MAX_PARTS} parts, found {len(parts)}")
    sdp: bytes | None = None
    metadata: bytes | None = None
    for part in parts:
        kind = part.get_content_type()
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise SipError(400, f"multipart/mixed part {kind}: expected a body, found none")
        if kind == SDP_TYPE and sdp is None:
            sdp = payload
        elif kind == METADATA_TYPE and metadata is None:
            metadata = payload
        else:
            raise SipError(
                415, f"multipart/mixed part: expected one {SDP_TYPE} and one {METADATA_TYPE}, found {kind!r}"
            )
    return SiprecBody(sdp, metadata)


@dataclass
class Participant:
    participant_id: str
    names: list[str] = field(default_factory=list)
    aors: list[str] = field(default_factory=list)


@dataclass
class RecordingMetadata:
    """Participants, and which stream (SDP label) each participant sends."""

    session_ids: list[str] = field(default_factory=list)
    participants: dict[str, Participant] = field(default_factory=dict)
    stream_labels: dict[str, str] = field(default_factory=dict)  # stream_id -> SDP label
    sends: dict[str, str] = field(default_factory=dict)  # stream_id -> participant_id

    def participant_for_label(self, label: str) -> Participant | None:
        for stream_id, stream_label in self.stream_labels.items():
            if stream_label == label:
                participant_id = self.sends.get(stream_id)
                return self.participants.get(participant_id) if participant_id else None
        return None

    def merge(self, update: RecordingMetadata) -> RecordingMetadata:
        """A partial update (RFC 7865 ``datamode`` partial) over what is known."""
        merged = RecordingMetadata(
            list(dict.fromkeys(self.session_ids + update.session_ids)),
            {**self.participants, **update.participants},
            {**self.stream_labels, **update.stream_labels},
            {**self.sends, **update.sends},
        )
        return merged


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ET.Element) -> str:
    return (element.text or "").strip()[:MAX_FIELD_CHARS]


def parse_metadata(body: bytes) -> RecordingMetadata:
    """RFC 7865 recording metadata; SipError 400 when it is not that XML."""
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise SipError(400, "rs-metadata: expected XML without a document type declaration, found one")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise SipError(400, f"rs-metadata: expected well-formed XML, found {exc}") from None
    if _local(root.tag) != "recording":
        raise SipError(
            400, f"rs-metadata: expected a <recording> root element, found <{_local(root.tag)[:40]}>"
        )
    metadata = RecordingMetadata()
    for element in root:
        kind = _local(element.tag)
        if kind == "session":
            session_id = element.get("session_id")
            if session_id:
                metadata.session_ids.append(session_id[:MAX_FIELD_CHARS])
        elif kind == "participant":
            _participant(element, metadata)
        elif kind == "stream":
            stream_id = element.get("stream_id")
            label = next((_text(c) for c in element if _local(c.tag) == "label"), "")
            if stream_id and label:
                metadata.stream_labels[stream_id[:MAX_FIELD_CHARS]] = label
        elif kind == "participantstreamassoc":
            participant_id = element.get("participant_id")
            for child in element:
                if _local(child.tag) == "send" and participant_id and _text(child):
                    metadata.sends[_text(child)] = participant_id[:MAX_FIELD_CHARS]
    return metadata


def _participant(element: ET.Element, metadata: RecordingMetadata) -> None:
    participant_id = element.get("participant_id")
    if not participant_id:
        return
    participant = Participant(participant_id[:MAX_FIELD_CHARS])
    for child in element:
        kind = _local(child.tag)
        if kind == "nameID":  # RFC 7865: <nameID aor="sip:..."><name>Alice</name></nameID>
            aor = child.get("aor")
            if aor:
                participant.aors.append(aor[:MAX_FIELD_CHARS])
            participant.names.extend(_text(n) for n in child if _local(n.tag) == "name" and _text(n))
        elif kind == "aor" and _text(child):  # earlier drafts: <aor>sip:...</aor>
            participant.aors.append(_text(child))
        elif kind == "name" and _text(child):
            participant.names.append(_text(child))
    metadata.participants[participant.participant_id] = participant


def participant_metadata(participant: Participant | None, label: str | None, call_id: str) -> dict[str, str]:
    """What a stream's start event says about its party."""
    info = {"call_id": call_id}
    if label is not None:
        info["label"] = label
    if participant is not None:
        info["participant_id"] = participant.participant_id
        if participant.names:
            info["name"] = participant.names[0]
        if participant.aors:
            info["aor"] = participant.aors[0]
            number = _number(participant.aors[0])
            if number:
                info["number"] = number
    return info


def _number(aor: str) -> str | None:
    """The user part of a sip:/sips:/tel: address of record when it is a phone number."""
    user = aor.split(":", 1)[-1].split("@")[0].split(";")[0]
    digits = user.lstrip("+")
    return user if digits.isdigit() and len(digits) >= 3 else None
