"""Detector artifacts: save, reload, refuse mismatches; safetensors + JSON, never pickle."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from safetensors import safe_open

from fakes import TINY_HIDDEN, save_tiny_wav2vec2
from spoofwatch.errors import ArtifactMismatchError, ModelError
from spoofwatch.model.artifact import (
    CARD_FILE,
    TENSORS_FILE,
    detector_dir,
    load_detector,
    read_card,
    save_detector,
)
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.detector import Detector, DetectorSettings
from spoofwatch.model.encoders.base import EncoderIdentity
from spoofwatch.model.encoders.hf import HFEncoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.head import LinearHead
from spoofwatch.model.pooling import pooled_dim

WINDOW_S = 0.5
SAMPLES = 8000
HIDDEN = TINY_HIDDEN
LAYERS = (0, 2)
SETTINGS = DetectorSettings(window_s=WINDOW_S, hop_s=0.25, layers=LAYERS, threshold=0.4)
CALIBRATION = AffineCalibration(scale=0.7, offset=0.1)


def random_windows(n: int, seed: int) -> NDArray[np.float32]:
    return (np.random.default_rng(seed).standard_normal((n, SAMPLES)) * 0.1).astype(np.float32)


def placeholder_head(n_features: int) -> LinearHead:
    """A head of the right width, only so a Detector can pool features before training."""
    zeros = np.zeros(n_features, dtype=np.float32)
    return LinearHead.from_tensors(
        {
            "head.mean": zeros,
            "head.scale": zeros + 1,
            "head.coef": zeros,
            "head.intercept": np.zeros(1, dtype=np.float32),
        }
    )


@dataclass(frozen=True)
class Trained:
    checkpoint: Path
    other_checkpoint: Path
    encoder: HFEncoder
    detector: Detector
    artifact: Path
    probe: NDArray[np.float32]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("artifact")
    save_tiny_wav2vec2(root / "encoder-a", seed=0)
    save_tiny_wav2vec2(root / "encoder-b", seed=1)
    encoder = HFEncoder(str(root / "encoder-a"), window_s=WINDOW_S)
    width = pooled_dim(len(LAYERS), HIDDEN)
    extractor = Detector(encoder, placeholder_head(width), CALIBRATION, SETTINGS)
    features = extractor.features(random_windows(16, seed=0))
    labels = np.array([0, 1] * 8)
    head = LinearHead(C=0.1).fit(features, labels)
    detector = Detector(encoder, head, CALIBRATION, SETTINGS)
    artifact = save_detector(
        root / "detector",
        head=head,
        calibration=CALIBRATION,
        settings=SETTINGS,
        encoder_spec=EncoderSpec("hf", str(root / "encoder-a")),
        encoder_identity=encoder.identity,
        card_extra={"training_data": {"n_bonafide": 8, "n_spoof": 8}},
    )
    probe = random_windows(5, seed=9)
    return Trained(root / "encoder-a", root / "encoder-b", encoder, detector, artifact, probe)


def copy_artifact(trained: Trained, tmp_path: Path) -> Path:
    target = tmp_path / "detector"
    shutil.copytree(trained.artifact, target)
    return target


def edit_card(directory: Path, change: dict[str, Any]) -> None:
    card = json.loads((directory / CARD_FILE).read_text())
    card.update(change)
    (directory / CARD_FILE).write_text(json.dumps(card))


def test_features_have_the_pooled_width(trained: Trained) -> None:
    features = trained.detector.features(trained.probe)
    assert features.shape == (5, pooled_dim(len(LAYERS), HIDDEN))
    assert features.dtype == np.float32


def test_reload_with_the_same_encoder_scores_identically(trained: Trained) -> None:
    loaded = load_detector(trained.artifact, encoder=trained.encoder)
    expected = trained.detector.score_windows(trained.probe)
    assert np.array_equal(loaded.score_windows(trained.probe), expected)
    assert len(np.unique(expected)) == len(expected)  # a head that actually looks at the audio
    assert loaded.settings == SETTINGS
    assert loaded.calibration == CALIBRATION
    assert loaded.threshold == 0.4
    assert loaded.window_samples == SAMPLES
    assert loaded.card["training_data"] == {"n_bonafide": 8, "n_spoof": 8}


def test_reload_without_an_encoder_builds_it_from_the_card(trained: Trained) -> None:
    loaded = load_detector(trained.artifact)
    assert isinstance(loaded.encoder, HFEncoder)
    assert loaded.encoder.identity == trained.encoder.identity
    assert np.array_equal(loaded.score_windows(trained.probe), trained.detector.score_windows(trained.probe))


def test_hop_may_differ_at_load_time(trained: Trained) -> None:
    loaded = load_detector(trained.artifact, encoder=trained.encoder, window_s=WINDOW_S, hop_s=0.1)
    assert loaded.settings.hop_s == 0.1
    assert loaded.settings.window_s == WINDOW_S


def test_card_records_what_the_head_depends_on(trained: Trained) -> None:
    card = json.loads((trained.artifact / CARD_FILE).read_text())
    assert read_card(trained.artifact) == card
    assert card["format_version"] == 1
    assert card["encoder"]["spec"] == {"kind": "hf", "name": str(trained.checkpoint), "layers": None}
    assert card["encoder"]["identity"] == trained.encoder.identity.to_dict()
    assert card["encoder"]["identity"]["weights_sha256"] == trained.encoder.identity.weights_sha256
    assert card["window"] == {"window_s": WINDOW_S, "hop_s": 0.25, "sample_rate": 16000}
    assert card["layers"] == list(LAYERS)
    assert card["calibration"] == {"kind": "affine", "scale": 0.7, "offset": 0.1}
    assert card["threshold"] == {"p_spoof": 0.4}
    assert card["head"]["n_features"] == pooled_dim(len(LAYERS), HIDDEN)


def test_artifact_is_safetensors_and_json_only(trained: Trained) -> None:
    assert sorted(p.name for p in trained.artifact.iterdir()) == sorted([CARD_FILE, TENSORS_FILE])
    for path in trained.artifact.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    with safe_open(str(trained.artifact / TENSORS_FILE), framework="numpy") as tensors:
        assert set(tensors.keys()) == {"head.mean", "head.scale", "head.coef", "head.intercept"}


def test_other_encoder_weights_are_refused(trained: Trained) -> None:
    other = HFEncoder(str(trained.other_checkpoint), window_s=WINDOW_S)
    with pytest.raises(ArtifactMismatchError, match="weights_sha256") as info:
        load_detector(trained.artifact, encoder=other)
    assert trained.encoder.identity.weights_sha256 in str(info.value)
    assert other.identity.weights_sha256 in str(info.value)


def test_card_pointing_at_other_weights_is_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    edit_card(
        directory,
        {
            "encoder": {
                "spec": {"kind": "hf", "name": str(trained.other_checkpoint)},
                "identity": trained.encoder.identity.to_dict(),
            }
        },
    )
    with pytest.raises(ArtifactMismatchError, match="weights_sha256"):
        load_detector(directory)


class ShallowerEncoder:
    """The same weights reporting fewer hidden states, as a truncated copy would."""

    def __init__(self, inner: HFEncoder) -> None:
        self.inner = inner

    @property
    def identity(self) -> EncoderIdentity:
        return replace(self.inner.identity, num_hidden_states=self.inner.identity.num_hidden_states - 1)

    @property
    def window_samples(self) -> int:
        return self.inner.window_samples

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inner.hidden_states(windows)[:-1]


def test_encoder_of_other_depth_is_refused(trained: Trained) -> None:
    with pytest.raises(ArtifactMismatchError, match=r"num_hidden_states=3.*num_hidden_states=2"):
        load_detector(trained.artifact, encoder=ShallowerEncoder(trained.encoder))


def test_other_window_is_refused(trained: Trained) -> None:
    with pytest.raises(ArtifactMismatchError, match=r"trained on 0\.5 s windows, 1\.0 s was requested"):
        load_detector(trained.artifact, encoder=trained.encoder, window_s=1.0)


def test_encoder_with_other_window_is_refused(trained: Trained) -> None:
    wider = HFEncoder(str(trained.checkpoint), window_s=1.0)
    with pytest.raises(ArtifactMismatchError, match=f"expects {SAMPLES} samples per window.*takes 16000"):
        load_detector(trained.artifact, encoder=wider)


def test_missing_tensors_are_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    (directory / TENSORS_FILE).unlink()
    with pytest.raises(ModelError, match=f"missing {TENSORS_FILE}"):
        load_detector(directory, encoder=trained.encoder)


def test_corrupt_tensors_are_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    (directory / TENSORS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="expected a safetensors file"):
        load_detector(directory, encoder=trained.encoder)


def test_missing_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=f"not a detector directory \\(expected {CARD_FILE}"):
        load_detector(tmp_path)


def test_packaged_detectors_are_found_by_name_unless_a_folder_has_that_name(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPOOFWATCH_DETECTOR", raising=False)
    default, resynth = detector_dir("default"), detector_dir("resynth")
    assert detector_dir(None) == default != resynth
    assert default.parent == resynth.parent == Path(str(resources.files("spoofwatch.model")))
    # The resynth card remakes each window with FARGAN; the default one has no vocoder step.
    assert read_card(default)["spectral"]["spec"]["kind"] == "lfcc-phase"
    assert read_card(resynth)["spectral"]["spec"]["kind"] == "lfcc-phase-resynth-streamed"
    monkeypatch.setenv("SPOOFWATCH_DETECTOR", "resynth")
    assert detector_dir(None) == resynth
    # A folder of that name in the working directory wins over the packaged card.
    local = copy_artifact(trained, tmp_path)
    local.rename(tmp_path / "resynth")
    assert detector_dir("resynth") == Path("resynth")
    assert detector_dir(None) == Path("resynth")  # $SPOOFWATCH_DETECTOR resolves the same way
    unknown = r"nothing-here: not a detector directory .* packaged detector \(default, resynth\)"
    with pytest.raises(ModelError, match=unknown):
        load_detector("nothing-here")


def test_malformed_json_is_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    (directory / CARD_FILE).write_text('{"format_version": 1,')
    with pytest.raises(ModelError, match="invalid JSON"):
        load_detector(directory, encoder=trained.encoder)


@pytest.mark.parametrize(
    ("card_text", "found"),
    [('{"format_version": 2}', "found 2"), ("[1]", "found list"), ("{}", "found None")],
)
def test_wrong_format_version_is_refused(tmp_path: Path, card_text: str, found: str) -> None:
    (tmp_path / CARD_FILE).write_text(card_text)
    with pytest.raises(ModelError, match=f"expected format_version 1, {found}"):
        load_detector(tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        {"window": {"hop_s": 0.25}},
        {"layers": "zero"},
        {"encoder": {"spec": "hf", "identity": {}}},
        {"calibration": {"kind": "affine"}},
        {"threshold": 0.4},
    ],
    ids=["no-window", "layers-not-ints", "spec-not-object", "calibration-incomplete", "threshold-not-object"],
)
def test_malformed_card_fields_are_refused(trained: Trained, tmp_path: Path, change: dict[str, Any]) -> None:
    directory = copy_artifact(trained, tmp_path)
    edit_card(directory, change)
    with pytest.raises(ModelError, match="malformed model card"):
        load_detector(directory, encoder=trained.encoder)


def test_card_without_layers_is_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    edit_card(directory, {"layers": []})
    with pytest.raises(ModelError, match="at least one layer"):
        load_detector(directory, encoder=trained.encoder)


def test_detector_refuses_bad_windows(trained: Trained) -> None:
    with pytest.raises(ModelError, match=rf"shape \(batch, {SAMPLES}\).*found \(2, 100\)"):
        trained.detector.score_windows(np.zeros((2, 100), dtype=np.float32))
    bad = trained.probe.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ModelError, match="NaN or Inf"):
        trained.detector.score_windows(bad)


def test_backend_is_recorded_and_old_cards_run_on_torch(trained: Trained, tmp_path: Path) -> None:
    assert json.loads((trained.artifact / CARD_FILE).read_text())["inference"]["backend"] == "torch"
    directory = copy_artifact(trained, tmp_path)
    card = json.loads((directory / CARD_FILE).read_text())
    del card["inference"]["backend"]  # cards written before the backend option
    (directory / CARD_FILE).write_text(json.dumps(card))
    assert load_detector(directory, encoder=trained.encoder).settings.backend == "torch"


def test_unknown_backend_and_non_whisper_onnx_are_refused(trained: Trained, tmp_path: Path) -> None:
    directory = copy_artifact(trained, tmp_path)
    card = json.loads((directory / CARD_FILE).read_text())
    card["inference"]["backend"] = "tensorrt"
    (directory / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"backend must be one of \('torch', 'onnxruntime'\)"):
        load_detector(directory, encoder=trained.encoder)
    with pytest.raises(ModelError, match="runs Whisper"):
        load_detector(trained.artifact, encoder=trained.encoder, backend="onnxruntime")


def test_level_normalisation_is_recorded_and_makes_scores_gain_free(trained: Trained, tmp_path: Path) -> None:
    # LFCC statistics carry the level (the tiny wav2vec2 normalises its input itself).
    spec = EncoderSpec("lfcc", "lfcc")
    encoder = build_encoder(spec, WINDOW_S)
    settings = replace(SETTINGS, layers=(0,), level_dbfs=-26.0)
    plain_settings = replace(settings, level_dbfs=None)
    width = pooled_dim(1, encoder.identity.hidden_size)
    features = Detector(encoder, placeholder_head(width), CALIBRATION, plain_settings).features(
        random_windows(16, seed=0)
    )
    head = LinearHead(C=0.1).fit(features, np.array([0, 1] * 8))
    directory = save_detector(
        tmp_path / "levelled",
        head=head,
        calibration=CALIBRATION,
        settings=settings,
        encoder_spec=spec,
        encoder_identity=encoder.identity,
    )
    assert read_card(directory)["level"]["target_dbfs"] == -26.0
    assert "level" not in read_card(trained.artifact)
    levelled = load_detector(directory)
    assert levelled.settings.level_dbfs == -26.0
    plain = Detector(encoder, head, CALIBRATION, plain_settings)
    loud, quiet = trained.probe * 4.0, trained.probe * 0.02
    np.testing.assert_allclose(
        levelled.score_windows(loud), levelled.score_windows(quiet), rtol=1e-4, atol=1e-4
    )
    assert np.abs(plain.score_windows(loud) - plain.score_windows(quiet)).max() > 0.01
    assert load_detector(trained.artifact, encoder=trained.encoder).settings.level_dbfs is None


@pytest.mark.parametrize(
    ("level", "message"),
    [({"target_dbfs": 20}, r"within -60..0 dBFS, found 20"), ("loud", "'level' must be an object")],
)
def test_malformed_level_sections_are_refused(
    trained: Trained, tmp_path: Path, level: Any, message: str
) -> None:
    directory = copy_artifact(trained, tmp_path)
    edit_card(directory, {"level": level})
    with pytest.raises(ModelError, match=message):
        load_detector(directory, encoder=trained.encoder)
