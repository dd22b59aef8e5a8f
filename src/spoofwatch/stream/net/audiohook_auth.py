"""AudioHook authentication as Genesys specifies it: HTTP message signatures
(draft-ietf-httpbis-message-signatures, HMAC-SHA256 keyed with the base64-decoded client
secret) on the WebSocket upgrade request. Pure: no I/O.

A port of the reference server's verification (``purecloudlabs/audiohook-reference-
implementation``: ``app/audiohook/src/httpsignature/signature-verifier.ts``,
``app/src/authenticator.ts``), check for check and with its result codes and reasons:

- the ``X-API-KEY`` header is required; ``signature-input`` and ``signature`` are parsed
  as Structured Field Dictionaries, the first label is verified;
- ``created`` may not be in the future and ``expires`` not past (3 s clock skew allowed),
  and the signature may be at most ``max_age_s`` (10 s) old;
- the covered components must include ``@request-target``, ``@authority`` (the Host
  header), ``audiohook-organization-id``, ``audiohook-session-id``,
  ``audiohook-correlation-id`` and ``x-api-key``; the base is re-encoded from the parsed
  form and HMAC'd; the comparison is constant time;
- the ``nonce`` parameter must be present and at least 22 characters, ``keyid`` must equal
  the API key; an unknown key is checked against a random key and fails the same way;
- an unsigned request passes only for an API key whose client secret is empty (the
  reference's API-key-only mode for platforms that do not sign).

Added to the reference: a nonce seen in a verified signature is refused for as long as
that signature could still be accepted (replay window), and the organization id header
must equal the ``open`` message's ``organizationId`` (the reference's open-time
authenticator; ``check_organization``). Secrets never appear in reasons, logs or reprs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from spoofwatch.errors import ConfigError, ProtocolError
from spoofwatch.stream.protocols.structured_fields import (
    InnerList,
    Item,
    encode_bare_item,
    encode_inner_list,
    encode_item,
    parse_dictionary,
)

__all__ = [
    "REQUIRED_COMPONENTS",
    "AudioHookAuthenticator",
    "VerifyResult",
    "check_organization",
    "load_audiohook_clients",
]

MAX_CLOCK_SKEW_S: Final = 3
MAX_SIGNATURE_AGE_S: Final = 10
MIN_NONCE_LENGTH: Final = 22
MAX_NONCES: Final = 100_000
REQUIRED_COMPONENTS: Final = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
_DERIVED: Final = (
    "@method",
    "@authority",
    "@scheme",
    "@target-uri",
    "@request-target",
    "@path",
    "@query",
    "@status",
)

ResultCode = Literal["VERIFIED", "FAILED", "UNSIGNED", "EXPIRED", "INVALID", "PRECONDITION", "UNSUPPORTED"]


@dataclass(frozen=True)
class VerifyResult:
    code: ResultCode
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "VERIFIED"

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}" if self.reason else self.code


VERIFIED: Final = VerifyResult("VERIFIED")


def _fail(code: ResultCode, reason: str = "") -> VerifyResult:
    return VerifyResult(code, reason)


_OBS_FOLD: Final = re.compile(r"[ \t]*\r\n[ \t]+")


def canonical_field(values: Iterable[str]) -> str | None:
    """A header field's canonical value as the reference computes it: each value trimmed,
    obsolete line folding replaced by a space, several values joined with ', '."""
    cleaned = [_OBS_FOLD.sub(" ", v.strip()) for v in values]
    return ", ".join(cleaned) if cleaned else None


@dataclass(frozen=True)
class AudioHookClients:
    """API key -> client secret (bytes; empty: that key may connect unsigned)."""

    secrets: Mapping[str, bytes] = field(repr=False)

    def __repr__(self) -> str:
        return f"AudioHookClients(<{len(self.secrets)} API keys>)"


def _parse_client(entry: str, where: str) -> tuple[str, bytes]:
    key, sep, secret = entry.strip().rpartition(":")
    if not sep or not key:
        raise ConfigError(
            f"{where}: expected entries 'API_KEY:BASE64_CLIENT_SECRET' (the secret may be empty for "
            "a key allowed to connect unsigned), found an entry without a ':'"
        )
    try:
        decoded = base64.b64decode(secret, validate=True)
    except binascii.Error:
        raise ConfigError(
            f"{where}: expected the client secret of API key {key!r} to be base64, found something else"
        ) from None
    return key, decoded


def load_audiohook_clients(entries: Iterable[str], secrets_file: str | None = None) -> AudioHookClients:
    """``server.audiohook_clients`` entries and the lines of ``server.audiohook_clients_file``
    (``API_KEY:BASE64_SECRET`` each; blank lines and ``#`` comments ignored)."""
    clients: dict[str, bytes] = {}
    for entry in entries:
        if entry.strip():
            key, secret = _parse_client(entry, "server.audiohook_clients")
            clients[key] = secret
    if secrets_file:
        path = Path(secrets_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"server.audiohook_clients_file: cannot read {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                key, secret = _parse_client(line, f"{path} line {number}")
                clients[key] = secret
    return AudioHookClients(clients)


class NonceWindow:
    """Nonces of verified signatures, each remembered until its signature would expire."""

    def __init__(self, capacity: int = MAX_NONCES) -> None:
        self.capacity = capacity
        self._until: OrderedDict[str, float] = OrderedDict()

    def admit(self, nonce: str, until: float, now: float) -> bool:
        """False for a nonce seen before (a replay) or when the window is full."""
        while self._until and next(iter(self._until.values())) < now:
            self._until.popitem(last=False)
        if nonce in self._until or len(self._until) >= self.capacity:
            return False
        self._until[nonce] = until
        self._until.move_to_end(nonce)
        return True


class AudioHookAuthenticator:
    """Verifies an AudioHook upgrade request's signature (see the module docstring)."""

    def __init__(
        self,
        clients: AudioHookClients,
        *,
        max_age_s: int = MAX_SIGNATURE_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self.max_age_s = max_age_s
        self.clock = clock
        self.nonces = NonceWindow()

    def verify(self, headers: Mapping[str, list[str]], request_target: str) -> VerifyResult:
        """``headers``: lower-case name -> the field's values; ``request_target``: the
        request's path and query as received."""
        api_key = canonical_field(headers.get("x-api-key", []))
        if not api_key:
            return _fail("PRECONDITION", 'Missing "X-API-KEY" header field')
        result = self._verify_signature(headers, request_target, api_key)
        if result.code == "UNSIGNED" and self.clients.secrets.get(api_key) == b"":
            return VERIFIED
        return result

    def _verify_signature(self, headers: Mapping[str, list[str]], target: str, api_key: str) -> VerifyResult:
        try:
            inputs = _dictionary(headers, "signature-input")
        except ProtocolError:
            return _fail("INVALID", 'Failed to parse "signature-input" header field')
        try:
            signatures = _dictionary(headers, "signature")
        except ProtocolError:
            return _fail("INVALID", 'Failed to parse "signature" header field')
        if not inputs:
            if not signatures:
                return _fail("UNSIGNED", 'No "signature" and "signature-input" header fields')
            return _fail("INVALID", 'Found "signature" but no "signature-input" header field')
        if not signatures:
            return _fail("INVALID", 'Found "signature-input" but no "signature" header field')
        parsed: list[tuple[str, InnerList, bytes]] = []
        for label, base in inputs.items():
            signature = signatures.get(label)
            if signature is None:
                return _fail("INVALID", f"Signature with label {encode_bare_item(label)} not found")
            if not isinstance(signature, Item) or not isinstance(signature.value, bytes):
                return _fail(
                    "INVALID", f'Invalid "signature" header field value (label: {encode_bare_item(label)})'
                )
            if not isinstance(base, InnerList):
                return _fail(
                    "INVALID",
                    f'Invalid "signature-input" header field value for label {encode_bare_item(label)}: '
                    "(Dictionary member value must be an Inner List)",
                )
            if not all(isinstance(item.value, str) for item in base.items):
                return _fail(
                    "INVALID", 'Invalid "signature-input" header field value (not an Inner List of Strings)'
                )
            parsed.append((label, base, signature.value))
        _, base, signature_bytes = parsed[0]  # the reference verifies the first signature
        params = _signature_parameters(base)
        if isinstance(params, VerifyResult):
            return params
        expired = self._expired(params)
        if expired is not None:
            return expired
        data = _signature_base(base, headers, target)
        if isinstance(data, VerifyResult):
            return data
        nonce = params.get("nonce")
        if not isinstance(nonce, str):
            return _fail("PRECONDITION", 'Missing "nonce" signature parameter')
        if len(nonce) < MIN_NONCE_LENGTH:
            return _fail("PRECONDITION", 'Provided "nonce" signature parameter is too small')
        if params.get("keyid") != api_key:
            return _fail("PRECONDITION", "X-API-KEY header field and signature keyid mismatch")
        known = self.clients.secrets.get(api_key)
        key = known if known is not None else secrets.token_bytes(32)  # unknown: fail alike
        alg = params.get("alg", "hmac-sha256")
        computed = hmac.new(key, data.encode(), hashlib.sha256).digest()
        matches = hmac.compare_digest(signature_bytes, computed)
        if alg != "hmac-sha256":
            return _fail("UNSUPPORTED", f"Signature algorithm {encode_bare_item(str(alg))} is not supported")
        if not matches or known is None:
            return _fail("FAILED", "Signatures do not match")
        now = self.clock()
        created = params.get("created")
        until = max(
            float(params["expires"]) if isinstance(params.get("expires"), int) else now,
            float(created) + self.max_age_s if isinstance(created, int) else now,
        )
        if not self.nonces.admit(nonce, until + MAX_CLOCK_SKEW_S, now):
            return _fail("FAILED", 'Replayed "nonce" signature parameter (seen in an earlier request)')
        return VERIFIED

    def _expired(self, params: dict[str, str | int]) -> VerifyResult | None:
        created, expires = params.get("created"), params.get("expires")
        now = self.clock()
        if isinstance(created, int) and created and created > now + MAX_CLOCK_SKEW_S:
            return _fail("PRECONDITION", 'Invalid "created" parameter value (time in the future)')
        if isinstance(expires, int) and expires and expires < now + MAX_CLOCK_SKEW_S:
            return _fail("EXPIRED", "Signature has expired")
        if self.max_age_s:
            if not isinstance(created, int) or not created:
                return _fail(
                    "PRECONDITION", 'Cannot determine signature age (no "created" signature parameter)'
                )
            if created + self.max_age_s < now + MAX_CLOCK_SKEW_S:
                return _fail("EXPIRED", f"Signature is older than {self.max_age_s} s")
        return None


def _dictionary(headers: Mapping[str, list[str]], name: str) -> dict[str, Item | InnerList]:
    value = canonical_field(headers.get(name, []))
    return parse_dictionary(value) if value else {}


def _signature_parameters(base: InnerList) -> dict[str, str | int] | VerifyResult:
    if not base.params:
        return _fail("INVALID", 'Invalid "signature-input" header field value (no parameters)')
    params: dict[str, str | int] = {}
    for key, value in base.params:
        if key in ("alg", "keyid", "nonce"):
            if not isinstance(value, str):
                return _fail(
                    "INVALID",
                    f'Invalid "signature-input" header field value ({encode_bare_item(key)} '
                    "parameter must be a String)",
                )
        elif key in ("created", "expires"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return _fail(
                    "INVALID",
                    f'Invalid "signature-input" header field value ({encode_bare_item(key)} '
                    "parameter must be an Integer)",
                )
        else:
            return _fail(
                "INVALID",
                f'Invalid "signature-input" header field value (unknown parameter {encode_bare_item(key)})',
            )
        params[key] = value
    return params


def _signature_base(base: InnerList, headers: Mapping[str, list[str]], target: str) -> str | VerifyResult:
    remaining = set(REQUIRED_COMPONENTS)
    included: set[str] = set()
    lines: list[str] = []
    for item in base.items:
        name = item.value
        assert isinstance(name, str)  # checked by the caller
        encoded = encode_item(item)
        if item.params:
            return _fail("UNSUPPORTED", f"Component parameters are not supported ({encoded})")
        if name.startswith("@"):
            if name == "@signature-params":
                return _fail("INVALID", 'The "@signature-params" MUST NOT be listed in covered components.')
            if name not in _DERIVED:
                return _fail("INVALID", f"Unknown derived component ({encoded}) in signature base.")
            if encoded in included:
                return _fail("INVALID", f"Duplicate {encoded} component reference")
            if name == "@request-target":
                value = target
            elif name == "@authority":
                value = canonical_field(headers.get("host", [])) or ""
            else:
                value = ""
            if not value:
                return _fail("PRECONDITION", f"Cannot resolve reference to {encoded} component")
        else:
            if name == "signature":
                return _fail("UNSUPPORTED", f"Reference to component {encoded} is not yet supported.")
            field_value = canonical_field(headers.get(name, []))
            if not field_value:
                return _fail("PRECONDITION", f"Header field {encode_bare_item(name)} not present")
            value = field_value
        lines.append(f"{encoded}: {value}")
        included.add(encoded)
        remaining.discard(name)
    if remaining:
        missing = ",".join(encode_bare_item(n) for n in sorted(remaining, key=REQUIRED_COMPONENTS.index))
        return _fail("PRECONDITION", f"Signature does not cover some of the required component(s): {missing}")
    lines.append(f'"@signature-params": {encode_inner_list(base)}')
    return "\n".join(lines)


def check_organization(header: str | None, open_organization: str | None) -> VerifyResult:
    """The reference's open-time authenticator: the header must match the open message."""
    if not header:
        return _fail("PRECONDITION", 'Missing "audiohook-organization-id" header field')
    if open_organization != header:
        return _fail(
            "PRECONDITION",
            'Mismatch between "organizationId" open parameter and "audiohook-organization-id" header field',
        )
    return VERIFIED
