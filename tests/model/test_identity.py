"""Card identity: a content hash over the files that decide the scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from spoofwatch.errors import ModelError
from spoofwatch.model.artifact import detector_dir, read_card
from spoofwatch.model.identity import card_identity, feature_space


def test_identity_follows_content_not_place(tmp_path: Path) -> None:
    packaged = card_identity("default")
    copy = tmp_path / "copy"
    shutil.copytree(detector_dir("default"), copy)
    (copy / "canary.json").write_text("{}")  # files beside the card do not count
    assert card_identity(copy) == packaged
    assert len(packaged.sha256) == 64 and packaged.short == packaged.sha256[:12]
    assert packaged.name == read_card(copy)["name"]
    with open(copy / "head.safetensors", "ab") as handle:
        handle.write(b"\0")
    assert card_identity(copy).sha256 != packaged.sha256


def test_identity_of_a_non_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected a detector directory"):
        card_identity(tmp_path)


def test_feature_space_changes_with_layers_not_with_head() -> None:
    card = read_card(detector_dir("default"))
    same = {**card, "calibration": {"kind": "affine", "scale": 2.0, "offset": 0.0}}
    assert feature_space(same) == feature_space(card)
    assert feature_space({**card, "layers": [0]}) != feature_space(card)
    quantised = {**card, "inference": {**card["inference"], "quantization": "none"}}
    assert feature_space(quantised) != feature_space(card)
