"""The part of HTTP Structured Field Values (RFC 8941) that HTTP message signatures use:
parsing a Dictionary (``signature-input``, ``signature``) and serialising Items and Inner
Lists (the signature base). Written here rather than taken from ``http-sfv`` because the
signature base must be re-encoded exactly as Genesys' AudioHook reference implementation
does (``app/audiohook/src/httpsignature/structured-fields.ts``) and only this subset is
needed; the parser follows RFC 8941 section 4.2.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from spoofwatch.errors import ProtocolError

__all__ = ["BareItem", "InnerList", "Item", "Token", "encode_inner_list", "encode_item", "parse_dictionary"]


@dataclass(frozen=True)
class Token:
    value: str


BareItem = int | float | str | bytes | bool | Token
Parameters = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Parameters = ()


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Parameters = ()


_KEY: Final = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN: Final = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+\-.^_`|~]*")
_NUMBER: Final = re.compile(r"-?\d{1,15}(?:\.\d{1,3})?")
_BYTES: Final = re.compile(r":([A-Za-z0-9+/=]*):")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str) -> ProtocolError:
        found = self.text[self.pos : self.pos + 20] or "the end"
        return ProtocolError(f"structured field: expected {expected} at offset {self.pos}, found {found!r}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            raise self.fail("a key")
        self.pos = match.end()
        return match.group()

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            match = _BYTES.match(self.text, self.pos)
            if match is None:
                raise self.fail("a byte sequence")
            self.pos = match.end()
            try:
                return base64.b64decode(match.group(1), validate=True)
            except binascii.Error:
                raise self.fail("base64 inside the byte sequence") from None
        if c == "?":
            flag = self.text[self.pos + 1 : self.pos + 2]
            if flag not in ("0", "1"):
                raise self.fail("a boolean ?0 or ?1")
            self.pos += 2
            return flag == "1"
        if c == "-" or c.isdigit():
            match = _NUMBER.match(self.text, self.pos)
            if match is None:
                raise self.fail("a number")
            self.pos = match.end()
            text = match.group()
            return float(text) if "." in text else int(text)
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise self.fail("an item")
        self.pos = match.end()
        return Token(match.group())

    def string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            c = self.peek()
            if not c:
                raise self.fail('a closing "')
            self.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise self.fail('\\" or \\\\ after a backslash')
                self.pos += 1
                out.append(escaped)
            elif not " " <= c <= "~":
                raise self.fail("printable ASCII in a string")
            else:
                out.append(c)

    def parameters(self) -> Parameters:
        params: list[tuple[str, BareItem]] = []
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            name = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params = [(k, v) for k, v in params if k != name] + [(name, value)]
        return tuple(params)

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() != "(":
            value = self.bare_item()
            return Item(value, self.parameters())
        self.pos += 1
        items: list[Item] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.parameters())
            value = self.bare_item()
            items.append(Item(value, self.parameters()))
            if self.peek() not in (" ", ")"):
                raise self.fail("a space or ) in an inner list")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """An RFC 8941 Dictionary; ProtocolError says where it is malformed."""
    parser = _Parser(text)
    parser.skip(" \t")
    members: dict[str, Item | InnerList] = {}
    while parser.peek():
        name = parser.key()
        if parser.peek() == "=":
            parser.pos += 1
            members[name] = parser.item_or_inner_list()
        else:
            members[name] = Item(True, parser.parameters())
        parser.skip(" \t")
        if not parser.peek():
            break
        if parser.peek() != ",":
            raise parser.fail("a comma between dictionary members")
        parser.pos += 1
        parser.skip(" \t")
        if not parser.peek():
            raise parser.fail("a member after the comma")
    return members


def encode_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{round(value, 3):.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return f":{base64.b64encode(value).decode()}:"
    return value.value


def _encode_parameters(params: Parameters) -> str:
    return "".join(f";{k}" if v is True else f";{k}={encode_bare_item(v)}" for k, v in params)


def encode_item(item: Item) -> str:
    return encode_bare_item(item.value) + _encode_parameters(item.params)


def encode_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(encode_item(i) for i in inner.items) + ")" + _encode_parameters(inner.params)
