"""``spoofwatch cache list|prune``: what the embedding cache holds, and removing packs,
unused extractions and interrupted runs' leftovers without touching what is in use."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from fakes import save_tiny_wav2vec2
from spoofwatch.cli import main
from spoofwatch.errors import ConfigError
from spoofwatch.model.encoders.registry import build_encoder
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.cache_usage import DAY_S, LAST_USED, plan_prune, survey
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.extract import extract
from spoofwatch.train.pipeline import encoder_spec
from spoofwatch.train.store import PACK_META, pack_path, temporary_of, temporary_pid, write_pack

RATE = 16000


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _extractor(root: Path, name: str, items: int, used_days_ago: float, now: float) -> Path:
    """An extractor folder of ``items`` per-item files and one pack of them, last used then."""
    folder = root / "embeddings" / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    entries: list[Path | None] = []
    for i in range(items):
        path = folder / f"{i:040x}.npz"
        np.savez(path, features=rng.standard_normal((2, 1, 4)).astype(np.float16), t_start=np.arange(2.0))
        entries.append(path)
    target = pack_path(folder, [e.stem if e else None for e in entries])
    write_pack(target, entries, (1, 4))
    when = now - used_days_ago * DAY_S
    for path in [*folder.iterdir(), target / PACK_META]:
        os.utime(path, (when, when))
    (folder / LAST_USED).touch()
    os.utime(folder / LAST_USED, (when, when))
    return folder


def _cache(tmp_path: Path, now: float) -> Path:
    root = tmp_path / "cache"
    _extractor(root, "recent-clean", 3, 0.1, now)
    _extractor(root, "old-telephone", 2, 40.0, now)
    (root / "whisper-base-weights").mkdir()
    (root / "whisper-base-weights" / "model.bin").write_bytes(b"w" * 1000)
    return root


def test_the_survey_counts_items_packs_leftovers_and_other_entries(tmp_path: Path) -> None:
    now = time.time()
    root = _cache(tmp_path, now)
    recent = root / "embeddings" / "recent-clean"
    (recent / f"{'a' * 40}.{_dead_pid()}.tmp.npz").write_bytes(b"x" * 10)
    (recent / f"{'b' * 40}.{os.getpid()}.tmp.npz").write_bytes(b"x" * 10)  # a live run's
    (recent / "packs" / f"{'c' * 40}.{_dead_pid()}.tmp").mkdir()
    usage = survey(root)
    by_name = {e.path.name: e for e in usage.extractors}
    assert sorted(by_name) == ["old-telephone", "recent-clean"]
    assert by_name["recent-clean"].items == 3 and len(by_name["recent-clean"].packs) == 1
    assert by_name["old-telephone"].items == 2
    assert by_name["old-telephone"].last_used == pytest.approx(now - 40 * DAY_S, abs=2)
    assert by_name["recent-clean"].pack_bytes > 0
    assert sorted(x.path.name[:1] for x in usage.leftovers) == ["a", "c"]  # not the live one
    assert [(p.name, size) for p, size in usage.others] == [("whisper-base-weights", 1000)]


def test_the_temporaries_writers_make_are_the_ones_prune_recognises(tmp_path: Path) -> None:
    item, pack = tmp_path / f"{'a' * 40}.npz", tmp_path / "packs" / ("b" * 40)
    assert temporary_of(item).name == f"{'a' * 40}.{os.getpid()}.tmp.npz"
    assert temporary_of(pack).name == f"{'b' * 40}.{os.getpid()}.tmp"
    assert temporary_pid(temporary_of(item).name) == temporary_pid(temporary_of(pack).name) == os.getpid()
    assert temporary_pid(item.name) is None and temporary_pid(pack.name) is None


def test_prune_plans_leftovers_always_packs_on_request_and_unused_folders_by_age(tmp_path: Path) -> None:
    now = time.time()
    root = _cache(tmp_path, now)
    (root / "embeddings" / "recent-clean" / f"{'a' * 40}.{_dead_pid()}.tmp.npz").write_bytes(b"x")
    usage = survey(root)

    def removed(**options: Any) -> list[str]:
        return sorted(str(r.path.relative_to(root)) for r in plan_prune(usage, now=now, **options).removals)

    leftover = f"embeddings/recent-clean/{'a' * 40}.{usage.leftovers[0].pid}.tmp.npz"
    (recent_pack,) = next(e for e in usage.extractors if e.path.name == "recent-clean").packs
    recent_pack_name = str(recent_pack.path.relative_to(root))
    assert removed() == [leftover]
    assert removed(packs=True) == sorted(
        [leftover, recent_pack_name, *(str(p.path.relative_to(root)) for p in usage.extractors[0].packs)]
    )
    assert removed(unused_days=30) == sorted([leftover, "embeddings/old-telephone"])
    assert removed(unused_days=0.01) == sorted(
        [leftover, "embeddings/old-telephone", "embeddings/recent-clean"]
    )
    # a pack unused for longer than its folder goes alone
    os.utime(recent_pack.path / PACK_META, (now - 10 * DAY_S, now - 10 * DAY_S))
    usage = survey(root)
    assert removed(unused_days=5) == sorted([leftover, "embeddings/old-telephone", recent_pack_name])
    with pytest.raises(ConfigError, match="expected a number of days >= 0"):
        plan_prune(usage, unused_days=-1)


def test_the_command_lists_prunes_and_dry_runs(tmp_path: Path) -> None:
    now = time.time()
    root = _cache(tmp_path, now)
    out = io.StringIO()
    assert main(["cache", "list", "--cache", str(root)], out=out) == 0
    text = out.getvalue()
    assert "recent-clean: 3 items" in text and "old-telephone: 2 items" in text
    assert "whisper-base-weights" in text and "never pruned" in text

    out = io.StringIO()
    assert main(["cache", "prune", "--cache", str(root), "--unused-days", "30", "--dry-run"], out=out) == 0
    assert "would remove" in out.getvalue() and (root / "embeddings" / "old-telephone").is_dir()

    out = io.StringIO()
    assert main(["cache", "prune", "--cache", str(root), "--unused-days", "30", "--json"], out=out) == 0
    report = json.loads(out.getvalue())
    assert [Path(r["path"]).name for r in report["removed"]] == ["old-telephone"]
    assert report["bytes"] > 0 and report["failed"] == []
    assert not (root / "embeddings" / "old-telephone").exists()
    assert (root / "embeddings" / "recent-clean").is_dir()
    assert (root / "whisper-base-weights" / "model.bin").is_file()


def test_a_missing_cache_directory_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "list", "--cache", str(tmp_path / "nowhere")]) == 2
    assert "expected a folder" in capsys.readouterr().err


def test_extraction_marks_use_and_remakes_a_pruned_pack_with_the_same_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    save_tiny_wav2vec2(tmp_path / "w2v2")
    encoder = build_encoder(encoder_spec(f"hf:{tmp_path / 'w2v2'}"), 1.0)
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(2 * RATE)).astype(np.float32), RATE)
        items.append(LabelledItem(path, "bonafide", f"c{i}", system="-"))
    window = WindowConfig(RATE, 1.0, 0.5)
    first = np.array(extract(items, encoder, window, progress=False).features)
    usage = survey(tmp_path / "cache")
    (folder,) = usage.extractors
    assert (folder.path / LAST_USED).is_file() and folder.items == 3 and len(folder.packs) == 1
    pack_meta = folder.packs[0].path / PACK_META
    os.utime(pack_meta, (0, 0))
    extract(items, encoder, window, progress=False)
    assert pack_meta.stat().st_mtime > time.time() - 60  # opening the pack again marks it used

    assert main(["cache", "prune", "--packs"], out=io.StringIO()) == 0
    assert survey(tmp_path / "cache").extractors[0].packs == ()
    again = extract(items, encoder, window, progress=False)
    np.testing.assert_array_equal(np.array(again.features), first)
    assert survey(tmp_path / "cache").extractors[0].items == 3  # nothing was re-extracted away
