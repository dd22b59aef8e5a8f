"""The AudioHook client's request signing, ported line for line from Genesys' reference
implementation (``purecloudlabs/audiohook-reference-implementation``,
``app/audiohook/src/httpsignature/signature-builder.ts`` ``SignatureBuilder``, as used by
``client/src/clientwebsocket.ts``): the tests sign exactly as a Genesys client does. The
port is pinned to a vector made by the reference's own code (test_audiohook_auth.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time


def _string(value: str) -> str:
    if not re.fullmatch(r"[\x20-\x7E]*", value):
        raise ValueError(f"Invalid string value (must be ASCII): {value!r}")
    return '"' + re.sub(r'(["\\])', r"\\\1", value) + '"'


class SignatureBuilder:
    def __init__(self) -> None:
        self.components: list[tuple[str, str]] = []

    def add_component(self, identifier: str, value: str) -> SignatureBuilder:
        name = identifier.lower()
        val = re.sub(r"[ \t]*\r\n[ \t]+", " ", value.strip())
        for index, (existing, old) in enumerate(self.components):
            if existing == name:
                self.components[index] = (name, f"{old}, {val}")
                return self
        self.components.append((name, val))
        return self

    def create_signature(
        self,
        *,
        keyid: str,
        key: bytes,
        created: float | None = None,
        expires: float | None = None,
        label: str | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        created_int = int(created if created is not None else time.time())
        params = [
            ("keyid", _string(keyid)),
            (
                "nonce",
                _string(nonce if nonce is not None else base64.b64encode(secrets.token_bytes(18)).decode()),
            ),
            ("alg", _string("hmac-sha256")),
            ("created", str(created_int)),
            ("expires", str(created_int + int(expires if expires is not None else 30))),
        ]
        encoded_params = "(" + " ".join(_string(n) for n, _ in self.components) + ")"
        encoded_params += "".join(f";{k}={v}" for k, v in params)
        lines = [f"{_string(name)}: {value}" for name, value in self.components]
        lines.append(f'"@signature-params": {encoded_params}')
        signature = hmac.new(key, "\n".join(lines).encode(), hashlib.sha256).digest()
        sig_id = label or "sig1"
        return {
            "signature-input": f"{sig_id}={encoded_params}",
            "signature": f"{sig_id}=:{base64.b64encode(signature).decode()}:",
        }


def audiohook_headers(
    *,
    uri_path: str,
    authority: str,
    organization_id: str,
    session_id: str,
    correlation_id: str,
    api_key: str,
    client_secret: bytes | None,
    created: float | None = None,
    nonce: str | None = None,
    keyid: str | None = None,
) -> dict[str, str]:
    """The upgrade request's headers as the reference client (clientwebsocket.ts) sends them."""
    headers = {
        "Audiohook-Organization-Id": organization_id,
        "Audiohook-Session-Id": session_id,
        "Audiohook-Correlation-Id": correlation_id,
        "X-API-KEY": api_key,
    }
    if client_secret:
        headers.update(
            SignatureBuilder()
            .add_component("@request-target", uri_path)
            .add_component("@authority", authority)
            .add_component("audiohook-organization-id", organization_id)
            .add_component("audiohook-session-id", session_id)
            .add_component("audiohook-correlation-id", correlation_id)
            .add_component("x-api-key", api_key)
            .create_signature(keyid=keyid or api_key, key=client_secret, created=created, nonce=nonce)
        )
    return headers
