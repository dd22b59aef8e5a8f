"""TLS contexts for the WebSocket server (wss://) and the MQTT client (mqtts://).

Both require TLS 1.2 or later. Errors name the file and what was wrong with it, never
its contents.
"""

from __future__ import annotations

import logging
import os
import ssl

from spoofwatch.errors import ConfigError

logger = logging.getLogger(__name__)


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{what}: expected a readable PEM file, found no file at {path}")


def server_ssl_context(cert_file: str | None, key_file: str | None = None) -> ssl.SSLContext | None:
    """A server context from a PEM certificate chain and key; None when ``cert_file`` is None."""
    if cert_file is None:
        if key_file is not None:
            raise ConfigError("TLS: expected a certificate file with the key file, found only the key")
        return None
    _require_file(cert_file, "TLS certificate")
    if key_file is not None:
        _require_file(key_file, "TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS: expected a PEM certificate chain ({cert_file}) and its private key "
            f"({key_file or cert_file}), found them unusable: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read {cert_file} or {key_file}: {exc.strerror}") from None
    return context


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's trusted CAs, or only those in ``ca_file``."""
    if ca_file is not None:
        _require_file(ca_file, "TLS CA bundle")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS CA bundle {ca_file}: expected PEM certificates, found: {exc.reason or exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
