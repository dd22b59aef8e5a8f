"""The on-disk feature store: per-item cache packed into a memory map, resumable extraction,
and a head fitted from the store equal to one fitted from memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from fakes import save_tiny_wav2vec2
from spoofwatch.model.encoders.registry import build_encoder
from spoofwatch.model.head import LinearHead
from spoofwatch.model.spectral import spectral_block
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train import extract as extract_module
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import EmbeddingSet, extract, extract_with_spectral
from spoofwatch.train.fit import StackedRows, fit_head, stack
from spoofwatch.train.pipeline import encoder_spec, spectral_front_end_spec
from spoofwatch.train.store import cached_windows, drop_resident, open_pack, pack_path, write_pack

RATE = 16000


def _clips(root: Path, n: int) -> list[LabelledItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        label = "bonafide" if i % 2 == 0 else "spoof"
        seconds = 2.0 + 0.5 * (i % 4)  # different window counts per item
        audio = 0.1 * rng.standard_normal(int(seconds * RATE))
        if label == "spoof":
            audio += 0.3 * np.sin(2 * np.pi * (300 + 40 * i) * np.arange(audio.size) / RATE)
        path = root / f"c{i}.wav"
        sf.write(path, audio.astype(np.float32), RATE)
        items.append(LabelledItem(path, label, f"c{i}", system="-" if label == "bonafide" else "tone"))  # type: ignore[arg-type]
    items.append(LabelledItem(root / "missing.wav", "spoof", "missing", system="tone"))
    return items


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, WindowConfig, list[LabelledItem]]:
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    save_tiny_wav2vec2(tmp_path / "w2v2")
    encoder = build_encoder(encoder_spec(f"hf:{tmp_path / 'w2v2'}"), 1.0)
    audio = tmp_path / "audio"
    audio.mkdir()
    return encoder, WindowConfig(RATE, 1.0, 0.5), _clips(audio, 8)


def test_the_store_holds_what_memory_extraction_gives_at_float16(
    setup: tuple[Any, WindowConfig, list[LabelledItem]],
) -> None:
    encoder, window, items = setup
    stored = extract(items, encoder, window, progress=False)
    memory = extract(items, encoder, window, progress=False, cache=False)
    assert isinstance(stored.features, np.memmap) and stored.features.dtype == np.float16
    assert not stored.features.flags.writeable
    np.testing.assert_array_equal(stored.item_index, memory.item_index)
    np.testing.assert_array_equal(stored.t_start, memory.t_start)
    np.testing.assert_array_equal(stored.features, memory.features.astype(np.float16))
    assert [path for path, _ in stored.failed] == [str(items[-1].path)]
    # A second run opens the same pack (and reads the same values).
    again = extract(items, encoder, window, progress=False)
    assert Path(again.features.filename).parent == Path(stored.features.filename).parent  # type: ignore[attr-defined]
    np.testing.assert_array_equal(again.features, stored.features)


def test_an_interrupted_extraction_resumes_at_the_first_item_it_had_not_written(
    setup: tuple[Any, WindowConfig, list[LabelledItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder, window, items = setup
    real = extract_module._embed_item
    calls: list[str] = []

    def interrupted(item: LabelledItem, *args: Any) -> Any:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(item.utt_id)
        return real(item, *args)

    monkeypatch.setattr(extract_module, "_embed_item", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(items, encoder, window, progress=False)
    assert calls == ["c0", "c1", "c2"]
    calls.clear()

    def counted(item: LabelledItem, *args: Any) -> Any:
        calls.append(item.utt_id)
        return real(item, *args)

    monkeypatch.setattr(extract_module, "_embed_item", counted)
    resumed = extract(items, encoder, window, progress=False)
    assert calls == ["c3", "c4", "c5", "c6", "c7"]  # the missing file fails before decoding
    fresh = extract(items, encoder, window, progress=False, cache=False)
    np.testing.assert_array_equal(resumed.features, fresh.features.astype(np.float16))


def test_encoder_and_spectral_block_share_one_pass_through_the_channel(
    setup: tuple[Any, WindowConfig, list[LabelledItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder, window, items = setup
    spectral = build_encoder(spectral_front_end_spec("lfcc-phase"), window.window_s)  # type: ignore[arg-type]
    real = extract_module.get_channel
    through: list[int] = []

    def counted(name: str) -> Any:
        channel = real(name)

        def run(samples: Any, rate: int) -> Any:
            through.append(len(samples))
            return channel(samples, rate)

        return run

    monkeypatch.setattr(extract_module, "get_channel", counted)
    joint = extract_with_spectral(items, encoder, spectral, window, channel="telephone", progress=False)
    assert len(through) == 8  # each decodable item once, not once per front end (16)
    assert [path for path, _ in joint.failed] == [str(items[-1].path)]
    alone = extract(items, spectral, window, channel="telephone", progress=False, cache=False)
    main = extract(items, encoder, window, channel="telephone", progress=False, cache=False)
    np.testing.assert_array_equal(joint.item_index, main.item_index)
    width = encoder.identity.num_hidden_states * 2 * encoder.identity.hidden_size
    rows = joint.layer_rows(list(range(encoder.identity.num_hidden_states)), 0, len(joint.item_index))
    np.testing.assert_array_equal(
        rows[:, :width], main.features.astype(np.float16).astype(np.float32).reshape(len(rows), -1)
    )
    np.testing.assert_allclose(
        rows[:, width:],
        spectral_block(spectral, alone.features.astype(np.float16).astype(np.float32)).reshape(len(rows), -1),
        rtol=1e-5,
        atol=1e-6,
    )
    through.clear()
    extract_with_spectral(items, encoder, spectral, window, channel="telephone", progress=False)
    assert through == []  # all cached: nothing decoded again


def test_a_pack_round_trips_and_skips_items_without_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    entries: list[Path | None] = []
    arrays = []
    for i, count in enumerate((3, 0, 5, 1)):
        if count == 0:
            entries.append(None)
            continue
        feats = rng.standard_normal((count, 2, 6)).astype(np.float16)
        path = tmp_path / f"{i}.npz"
        np.savez(path, features=feats, t_start=np.arange(count, dtype=np.float64))
        entries.append(path)
        arrays.append(feats)
        assert cached_windows(path) == (count, 2, 6)
    target = pack_path(tmp_path, [None if e is None else e.stem for e in entries])
    write_pack(target, entries, (2, 6))
    pack = open_pack(target)
    np.testing.assert_array_equal(pack.features, np.concatenate(arrays))
    assert pack.item_index.tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 3]
    assert pack.t_start.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]
    assert pack_path(tmp_path, ["a", "b"]) != pack_path(tmp_path, ["b", "a"])
    drop_resident(pack.features)  # pages let go of; the values still read back
    np.testing.assert_array_equal(pack.features[-1], arrays[-1][-1])


def test_a_chunked_fit_equals_the_fit_of_the_whole_float64_matrix() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = (3 * rng.standard_normal((9000, 40)) + 1).astype(np.float32)  # more rows than one chunk
    y = (rng.random(9000) < 0.4).astype(np.int64)
    x[y == 1, :3] += 0.7
    whole = np.asarray(x, dtype=np.float64)
    mean, scale = whole.mean(axis=0), whole.std(axis=0)
    reference = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(
        (whole - mean) / scale, y
    )
    head = LinearHead(C=0.1).fit(x, y)
    np.testing.assert_array_equal(head.mean_, mean.astype(np.float32))
    np.testing.assert_array_equal(head.scale_, scale.astype(np.float32))
    np.testing.assert_array_equal(head.coef_, reference.coef_[0].astype(np.float32))
    single = LinearHead(C=0.1, fit_dtype=np.float32).fit(x, y)
    assert single.coef_ is not None and np.corrcoef(single.coef_, head.coef_)[0, 1] > 0.999


def _store_and_memory(tmp_path: Path, spectral: bool) -> tuple[EmbeddingSet, EmbeddingSet]:
    rng = np.random.default_rng(3)
    n_items, per = 900, 7  # 6300 windows: more than one chunk of rows
    items = tuple(
        LabelledItem(Path(f"/x/{i}.wav"), "bonafide" if i % 3 else "spoof", f"u{i}") for i in range(n_items)
    )
    index = np.repeat(np.arange(n_items), per)
    labels = np.array([1 if items[i].label == "bonafide" else 0 for i in index])
    feats = rng.standard_normal((len(index), 3, 8)).astype(np.float16)
    feats[:, 1, :] += (labels[:, None] * 0.8).astype(np.float16)
    path = tmp_path / "features.npy"
    stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=feats.shape)
    stored[:] = feats
    stored.flush()
    extra = rng.standard_normal((len(index), 5)).astype(np.float32) if spectral else None
    on_disk = EmbeddingSet(items, np.load(path, mmap_mode="r"), index, np.zeros(len(index)), (), extra)
    in_memory = EmbeddingSet(items, feats.astype(np.float32), index, np.zeros(len(index)), (), extra)
    return on_disk, in_memory


@pytest.mark.parametrize("spectral", [False, True])
def test_fitting_from_the_store_equals_fitting_from_memory(tmp_path: Path, spectral: bool) -> None:
    on_disk, in_memory = _store_and_memory(tmp_path, spectral)
    x, y = stack([in_memory], [0, 1])
    rows = StackedRows([on_disk], [0, 1])
    assert rows.shape == x.shape
    np.testing.assert_array_equal(rows.whole(), x)
    np.testing.assert_array_equal(on_disk.select_layers([0, 1]), x)
    keep = np.arange(len(x)) % 5 != 0
    np.testing.assert_array_equal(on_disk.select_layers([0, 1], keep), x[keep])
    np.testing.assert_array_equal(StackedRows([on_disk], [0, 1], [keep]).whole(), x[keep])
    from_disk = fit_head([on_disk], [in_memory], layers=[0, 1], C=0.1, spectral_weight=2.0)
    from_memory = LinearHead(C=0.1).fit(x, y, None if not spectral else np.r_[np.ones(16), np.full(5, 2.0)])
    assert from_disk.head.coef_ is not None
    np.testing.assert_array_equal(from_disk.head.coef_, from_memory.coef_)
    np.testing.assert_array_equal(from_disk.head.scale_, from_memory.scale_)
