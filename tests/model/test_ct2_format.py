"""The CTranslate2 ``model.bin`` reader against files written by an independent writer."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.encoders.ct2_format import parse_ct2_model

# CTranslate2's DataType enum (include/ctranslate2/types.h), written out independently.
DTYPE_CODES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.float16): 4,
}


def _string(text: str | bytes) -> bytes:
    raw = (text.encode() if isinstance(text, str) else text) + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(
    name: str | bytes,
    array: NDArray[np.generic],
    *,
    byte_count: int | None = None,
    dtype_code: int | None = None,
) -> bytes:
    data = np.ascontiguousarray(array).tobytes()
    code = DTYPE_CODES[array.dtype] if dtype_code is None else dtype_code
    return (
        _string(name)
        + struct.pack("<B", array.ndim)
        + b"".join(struct.pack("<I", d) for d in array.shape)
        + struct.pack("<B", code)
        + struct.pack("<I", len(data) if byte_count is None else byte_count)
        + data
    )


def write_model_bin(
    variables: list[bytes],
    aliases: dict[str, str],
    *,
    version: int = 6,
    spec_name: str = "TinySpec",
    revision: int = 3,
) -> bytes:
    header = struct.pack("<I", version) + _string(spec_name) + struct.pack("<I", revision)
    body = struct.pack("<I", len(variables)) + b"".join(variables)
    alias_table = struct.pack("<I", len(aliases)) + b"".join(
        _string(alias) + _string(target) for alias, target in aliases.items()
    )
    return header + body + alias_table


def sample_arrays() -> dict[str, NDArray[np.generic]]:
    rng = np.random.default_rng(7)
    return {
        "encoder/conv1/weight": rng.standard_normal((4, 3, 2)).astype(np.float16),
        "encoder/layer_0/ffn/linear_0/bias": rng.standard_normal(5).astype(np.float32),
        "encoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/activation": np.array(-3, dtype=np.int8),
        "decoder/quant/weight": rng.integers(-128, 127, size=(2, 3), dtype=np.int8),
        "decoder/alignment_heads": rng.integers(-1000, 1000, size=(3, 2), dtype=np.int16),
        "decoder/embeddings/weight": rng.standard_normal((3, 4)).astype(np.float32),
    }


ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}


def sample_file(version: int = 6) -> bytes:
    arrays = sample_arrays()
    return write_model_bin([_variable(n, a) for n, a in arrays.items()], ALIASES, version=version)


@pytest.mark.parametrize("version", [5, 6])
def test_parses_every_variable_exactly(version: int) -> None:
    model = parse_ct2_model(sample_file(version))
    expected = sample_arrays()
    assert model.spec_name == "TinySpec"
    assert model.spec_revision == 3
    assert model.binary_version == version
    assert list(model.variables) == list(expected)
    for name, array in expected.items():
        parsed = model.variables[name]
        assert parsed.dtype == array.dtype, name
        assert parsed.shape == array.shape, name
        assert parsed.tobytes() == array.tobytes(), name


def test_scalars_keep_rank_zero() -> None:
    model = parse_ct2_model(sample_file())
    heads = model.get("encoder/num_heads")
    assert heads.shape == ()
    assert int(heads) == 6
    assert int(model.get("decoder/activation")) == -3


def test_aliases_resolve_to_their_target() -> None:
    model = parse_ct2_model(sample_file())
    assert model.aliases == ALIASES
    target = model.get("decoder/embeddings/weight")
    via_alias = model.get("decoder/projection/weight")
    assert via_alias is target


def test_parsed_arrays_are_writable_copies() -> None:
    blob = sample_file()
    model = parse_ct2_model(blob)
    array = model.variables["encoder/layer_0/ffn/linear_0/bias"]
    assert array.flags.writeable
    array[:] = 0
    assert parse_ct2_model(blob).variables["encoder/layer_0/ffn/linear_0/bias"].any()


def test_unknown_variable_names_the_variable() -> None:
    model = parse_ct2_model(sample_file())
    with pytest.raises(ModelError, match="no variable 'encoder/missing'"):
        model.get("encoder/missing")


def test_empty_model_with_no_aliases_parses() -> None:
    model = parse_ct2_model(write_model_bin([], {}))
    assert model.variables == {}
    assert model.aliases == {}


@pytest.mark.parametrize("version", [2, 4, 7])
def test_unsupported_version_is_refused(version: int) -> None:
    with pytest.raises(ModelError, match=rf"expected one of \(5, 6\), found {version}"):
        parse_ct2_model(sample_file(version))


def test_every_truncation_is_refused() -> None:
    blob = sample_file()
    for cut in range(len(blob)):
        with pytest.raises(ModelError, match="truncated") as info:
            parse_ct2_model(blob[:cut])
        assert f"file has {cut}" in str(info.value)


def test_byte_count_mismatch_names_variable_and_both_counts() -> None:
    array = np.zeros((2, 3), dtype=np.float32)
    blob = write_model_bin([_variable("encoder/bad", array, byte_count=20)], {})
    with pytest.raises(ModelError) as info:
        parse_ct2_model(blob)
    message = str(info.value)
    assert "'encoder/bad'" in message
    assert "expected 24 bytes" in message
    assert "header says 20" in message


def test_unknown_dtype_code_is_refused() -> None:
    blob = write_model_bin([_variable("x", np.zeros(2, dtype=np.float16), dtype_code=5)], {})
    with pytest.raises(ModelError, match=r"'x'.*dtype code.*found 5"):
        parse_ct2_model(blob)


def test_trailing_data_is_refused() -> None:
    blob = sample_file()
    with pytest.raises(ModelError, match=f"end at byte {len(blob)}, found {len(blob) + 3}"):
        parse_ct2_model(blob + b"abc")


def test_invalid_utf8_name_is_refused() -> None:
    blob = write_model_bin([_variable(b"\xff\xfe", np.zeros(1, dtype=np.float32))], {})
    with pytest.raises(ModelError, match="UTF-8"):
        parse_ct2_model(blob)
