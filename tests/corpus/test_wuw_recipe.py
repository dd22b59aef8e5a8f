"""corpus/recipes/wuw_corpus_ii.py makes the ``wuw-corpus-ii`` card's origin directory from
the repository: each listed mu-law file unchanged behind a WAV header, at the path whose
speaker folder comes from the name said in the session's utterance 000."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import soundfile as sf

from spoofwatch.audio.pcm import mulaw_decode

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "corpus" / "recipes" / "wuw_corpus_ii.py"


def _entry(
    session: str, utt: str, said: str, phone: str = "cellphone", dialect: str = "native"
) -> dict[str, object]:
    name = f"WUWII{session}_{utt}.ulaw"
    return {
        "sessionNumber": session,
        "utteranceNumber": utt,
        "fileName": name,
        "filePath": f"calls/{session}/{name}",
        "phonetype": phone,
        "dialect": dialect,
        "transcription": said,
    }


def _origin(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A git repository shaped like wuw-corpus-ii: two sessions, one unlisted retake."""
    tree = root / "tree"
    entries = [
        _entry(
            "00001", "000", "[background noise/] {clicking/} Jeff Collins {/clicking] [/background noise]"
        ),
        _entry("00001", "001", "Operator"),
        _entry("00002", "000", "(( ))", phone="landlinephone", dialect="nonNative"),
        _entry("00002", "006", "this is Operator", phone="landlinephone", dialect="nonNative"),
    ]
    rng = np.random.default_rng(0)
    payloads: dict[str, bytes] = {}
    for entry, size in zip(entries, (800, 1601, 640, 3200), strict=True):  # one odd length
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        payloads[str(entry["fileName"])] = data
        path = tree / str(entry["filePath"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (tree / "calls" / "00001" / "WUWII00001_001_original.ulaw").write_bytes(b"\x7f" * 100)
    (tree / "data.json").write_text(json.dumps({"entries": entries}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tree)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "calls"], check=True)
    return tree, payloads


def _run(origin: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPE), str(origin), str(out), *extra], capture_output=True, text=True
    )


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.wav"))}


def test_listed_files_are_wrapped_unchanged_under_their_speaker(tmp_path: Path) -> None:
    tree, payloads = _origin(tmp_path)
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = _run(tree / ".git", tmp_path / "out", "--commit", commit)
    assert result.returncode == 0, result.stderr
    made = _tree(tmp_path / "out")
    jeff = "n" + hashlib.sha1(b"jeff collins").hexdigest()[:10]
    assert sorted(made) == [
        f"calls/cellphone/native/{jeff}/WUWII00001_001.wav",
        "calls/landlinephone/nonNative/s00002/WUWII00002_006.wav",  # no name said: the session
    ]  # utterance 000 (the caller's name) and the unlisted retake are left out
    for path, data in made.items():
        payload = payloads[Path(path).stem + ".ulaw"]
        assert data[44 : 44 + len(payload)] == payload
        samples, rate = sf.read(tmp_path / "out" / path, dtype="float32")
        info = sf.info(tmp_path / "out" / path)
        assert (rate, info.subtype, info.channels) == (8000, "ULAW", 1)
        expected = mulaw_decode(np.frombuffer(payload, dtype=np.uint8))
        np.testing.assert_allclose(samples, expected, atol=1e-3)
    # an unpacked tree of the same commit gives the same bytes
    assert _run(tree, tmp_path / "again").returncode == 0
    assert _tree(tmp_path / "again") == made


def test_a_wrong_origin_is_named_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run(tmp_path / "empty", tmp_path / "out")
    assert result.returncode != 0
    assert "expected an unpacked tree with data.json or a git directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_listed_file_missing_from_the_origin_is_named(tmp_path: Path) -> None:
    tree, _ = _origin(tmp_path)
    (tree / "calls" / "00002" / "WUWII00002_006.ulaw").unlink()  # the unpacked tree only
    result = _run(tree, tmp_path / "out")
    assert result.returncode != 0
    assert "1 file(s) that data.json lists are not in the origin" in result.stderr
    assert "calls/00002/WUWII00002_006.ulaw" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_data_json_entry_is_named(tmp_path: Path) -> None:
    tree, _ = _origin(tmp_path)
    entries = json.loads((tree / "data.json").read_text())["entries"]
    del entries[1]["filePath"]
    (tree / "data.json").write_text(json.dumps({"entries": entries}))
    result = _run(tree, tmp_path / "out")
    assert result.returncode != 0
    assert "data.json entry 1" in result.stderr and "filePath" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_card_names_this_recipe_and_its_commit() -> None:
    card = tomllib.loads((REPO / "corpus" / "cards" / "wuw-corpus-ii.toml").read_text())
    assert card["origin"]["type"] == "dir"
    assert "corpus/recipes/wuw_corpus_ii.py" in card["origin"]["recipe"]
    assert f'COMMIT = "{card["origin"]["commit"]}"' in RECIPE.read_text()
