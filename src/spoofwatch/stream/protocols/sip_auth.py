"""SIP digest authentication (RFC 3261 22, RFC 2617 / RFC 7616 ``MD5`` and ``SHA-256``)
for the recorder. No I/O.

Nonces are stateless: a timestamp and a random part, signed with an HMAC of a key made at
start-up, so the server keeps no per-challenge state that a flood could grow, and a nonce
older than ``NONCE_TTL_S`` is refused (stale). Passwords are compared through their
digest with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Final

from sipmessage import AuthCredentials

from spoofwatch.errors import ConfigError

NONCE_TTL_S: Final = 300.0
ALGORITHMS: Final = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_users(entries: Iterable[str]) -> dict[str, str]:
    """``user:password`` entries; ConfigError naming the bad entry's position, never its text."""
    users: dict[str, str] = {}
    for number, entry in enumerate(entries, 1):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"server.siprec_users entry {number}: expected USER:PASSWORD")
        users[user] = password
    return users


class DigestAuthenticator:
    def __init__(self, users: dict[str, str], realm: str, clock: Callable[[], float] = time.time) -> None:
        self.users = users
        self.realm = realm
        self.clock = clock
        self._key = secrets.token_bytes(32)

    def nonce(self) -> str:
        stamp = f"{int(self.clock()):x}.{secrets.token_hex(8)}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def challenge(self, *, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value."""
        value = f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5, qop="auth"'
        return value + (", stale=true" if stale else "")

    def _nonce_state(self, nonce: str) -> str:
        """``fresh``, ``stale`` (ours, expired) or ``forged``."""
        stamp, _, signature = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(self._sign(stamp), signature):
            return "forged"
        try:
            issued = int(stamp.split(".")[0], 16)
        except ValueError:
            return "forged"
        return "fresh" if self.clock() - issued <= NONCE_TTL_S else "stale"

    def verify(self, header: str | None, method: str) -> str:
        """``ok``, ``missing``, ``stale`` or ``bad`` for an Authorization header value."""
        if header is None:
            return "missing"
        try:
            credentials = AuthCredentials.parse(header)
        except ValueError:
            return "bad"
        params = credentials.parameters
        if credentials.scheme.lower() != "digest" or params is None:
            return "bad"
        user, nonce, uri, given = (params.get(k) for k in ("username", "nonce", "uri", "response"))
        if user is None or nonce is None or uri is None or given is None:
            return "bad"
        if params.get("realm") != self.realm or user not in self.users:
            return "bad"
        hash_fn = ALGORITHMS.get((params.get("algorithm") or "MD5").upper())
        if hash_fn is None:
            return "bad"
        state = self._nonce_state(nonce)
        if state != "fresh":
            return "stale" if state == "stale" else "bad"

        def h(text: str) -> str:
            return hash_fn(text.encode()).hexdigest()

        ha1 = h(f"{user}:{self.realm}:{self.users[user]}")
        ha2 = h(f"{method}:{uri}")
        qop = params.get("qop")
        if qop is None:
            expected = h(f"{ha1}:{nonce}:{ha2}")
        elif qop == "auth":
            nc, cnonce = params.get("nc"), params.get("cnonce")
            if nc is None or cnonce is None:
                return "bad"
            expected = h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        else:
            return "bad"
        return "ok" if hmac.compare_digest(expected, given.lower()) else "bad"
