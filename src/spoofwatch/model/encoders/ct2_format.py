"""Reader for CTranslate2 ``model.bin`` files, with numpy only.

The format (CTranslate2 ``src/models/model.cc``, binary version 6): a little-endian
header ``uint32 version``, ``string spec_name``, ``uint32 spec_revision``, ``uint32
n_variables``; then per variable ``string name``, ``uint8 rank``, ``uint32 dims[rank]``,
``uint8 dtype``, ``uint32 n_bytes`` and the raw bytes; then ``uint32 n_aliases`` and pairs
of strings. A string is ``uint16 length`` (including a trailing NUL) and the bytes.
The ``ctranslate2`` package itself is not needed to read it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spoofwatch.errors import ModelError

# CTranslate2's DataType enum, in declaration order.
_DTYPES: dict[int, np.dtype[np.generic]] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.int8),
    2: np.dtype(np.int16),
    3: np.dtype(np.int32),
    4: np.dtype(np.float16),
}
SUPPORTED_BINARY_VERSIONS = (5, 6)


@dataclass(frozen=True)
class Ct2Model:
    """The variables of one CTranslate2 model file."""

    spec_name: str
    spec_revision: int
    binary_version: int
    variables: dict[str, NDArray[np.generic]]
    aliases: dict[str, str]

    def get(self, name: str) -> NDArray[np.generic]:
        """Return a variable by name, following aliases."""
        key = self.aliases.get(name, name)
        try:
            return self.variables[key]
        except KeyError:
            raise ModelError(f"CTranslate2 model {self.spec_name!r} has no variable {name!r}") from None


class _Cursor:
    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise ModelError(
                f"CTranslate2 model is truncated: expected {size} more bytes at offset "
                f"{self.offset}, file has {len(self.buffer)}"
            )
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return int(value)

    def string(self) -> str:
        length = self.unpack("<H")
        start = self.offset
        raw = self.take(length)
        try:
            return raw[:-1].decode("utf-8") if raw.endswith(b"\0") else raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(
                f"CTranslate2 model is corrupt: expected a UTF-8 string at offset {start}, "
                f"found bytes {raw[:32]!r}"
            ) from None

    def take(self, n_bytes: int) -> bytes:
        end = self.offset + n_bytes
        if end > len(self.buffer):
            raise ModelError(
                f"CTranslate2 model is truncated: expected {n_bytes} bytes at offset "
                f"{self.offset} (up to byte {end}), file has {len(self.buffer)}"
            )
        raw = self.buffer[self.offset : end]
        self.offset = end
        return raw


def parse_ct2_model(buffer: bytes) -> Ct2Model:
    """Parse the bytes of a ``model.bin`` into named numpy arrays (copies)."""
    cursor = _Cursor(buffer)
    version = cursor.unpack("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(
            f"unsupported CTranslate2 binary version: expected one of "
            f"{SUPPORTED_BINARY_VERSIONS}, found {version}"
        )
    spec_name = cursor.string()
    spec_revision = cursor.unpack("<I")
    n_variables = cursor.unpack("<I")
    variables: dict[str, NDArray[np.generic]] = {}
    for _ in range(n_variables):
        name = cursor.string()
        rank = cursor.unpack("<B")
        dims = tuple(cursor.unpack("<I") for _ in range(rank))
        dtype_code = cursor.unpack("<B")
        if dtype_code not in _DTYPES:
            raise ModelError(
                f"variable {name!r}: expected a CTranslate2 dtype code in {sorted(_DTYPES)}, "
                f"found {dtype_code}"
            )
        dtype = _DTYPES[dtype_code]
        n_bytes = cursor.unpack("<I")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise ModelError(
                f"variable {name!r}: expected {expected} bytes for shape {dims} "
                f"{dtype}, header says {n_bytes}"
            )
        raw = cursor.take(n_bytes)
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(dims).copy()
    # Binary versions >= 3 always end with the alias table, so a file that stops right
    # after the last variable is truncated, not alias-free.
    aliases: dict[str, str] = {}
    for _ in range(cursor.unpack("<I")):
        alias = cursor.string()
        aliases[alias] = cursor.string()
    if cursor.offset != len(buffer):
        raise ModelError(
            f"CTranslate2 model has trailing data: expected the file to end at byte "
            f"{cursor.offset}, found {len(buffer)} bytes"
        )
    return Ct2Model(spec_name, spec_revision, version, variables, aliases)
