"""``train_detector`` and ``evaluate_detector`` end to end on a tiny random wav2vec2 saved
to disk and a synthetic labelled corpus (tones = spoof), with the embedding cache in tmp."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from fakes import RATE, clip, save_tiny_wav2vec2, write_fake_vocoder, write_manifest
from spoofwatch.audio.files import load_audio
from spoofwatch.config import ConfigError
from spoofwatch.errors import ArtifactMismatchError, DataError, ModelError
from spoofwatch.model.artifact import load_detector, read_card
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.encoders.phase import LfccPhaseEncoder
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.level import normalise_level
from spoofwatch.model.pooling import mean_std_pool, stored_precision
from spoofwatch.model.resynthesis.vocoder import VOCODER_ENV
from spoofwatch.ops.drift import DriftReference
from spoofwatch.stream.core.windowing import WindowConfig, cut_windows
from spoofwatch.train.clip_scoring import score_file
from spoofwatch.train.corpus import LabelledItem
from spoofwatch.train.evaluate import (
    detector_embeddings,
    evaluate_detector,
    llr_threshold,
    window_config,
    window_scores,
)
from spoofwatch.train.extract import remade_windows
from spoofwatch.train.pipeline import TrainOptions, encoder_spec, train_detector, truncated_spec


def corpus(root: Path) -> list[LabelledItem]:
    items = []
    for split, n, offset in (("train", 8, 0), ("dev", 6, 100)):
        for i in range(n):
            for label in ("bonafide", "spoof"):
                utt = f"{split}-{label}-{i}"
                path = root / f"{utt}.wav"
                sf.write(path, clip(label, offset + i + (50 if label == "spoof" else 0)), RATE)
                items.append(
                    LabelledItem(
                        path=path,
                        label=label,  # type: ignore[arg-type]
                        utt_id=utt,
                        system="tone" if label == "spoof" else "-",
                        speaker=f"{split}-spk{i % 3}",
                        split=split,
                        source=f"src-{split}-{i % 2}",
                    )
                )
    return items


def tiny_options(model: Path, **changes: Any) -> TrainOptions:
    """Options for the tiny corpus: 2 s windows 1 s apart, clean channel, states 0-1, C 1."""
    base = TrainOptions(
        encoder=f"hf:{model}",
        window_s=2.0,
        hop_s=1.0,
        train_hop_s=1.0,
        channels=("clean",),
        layers=(0, 1),
        C=1.0,
        name="tiny",
    )
    return replace(base, **changes)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[LabelledItem]]:
    """A tiny random wav2vec2 on disk, the synthetic corpus, and an embedding cache in tmp."""
    monkeypatch.setenv("SPOOFWATCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "tiny-w2v2"
    save_tiny_wav2vec2(model)
    audio = tmp_path / "audio"
    audio.mkdir()
    return model, corpus(audio)


@pytest.fixture
def trained(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> tuple[Path, dict, list[LabelledItem]]:
    model, items = workspace
    options = tiny_options(
        model,
        layers=None,  # chosen on dev
        threshold="false-alarm:0",
        quantization="int8",
        truncate_encoder=True,  # an HF encoder stays whole
        spectral="lfcc",
    )
    report = train_detector(items, None, tmp_path / "detector", options, progress=False)
    return tmp_path / "detector", report, [it for it in items if it.split == "dev"]


def test_train_writes_a_loadable_detector_with_its_threshold_policy(
    trained: tuple[Path, dict, list[LabelledItem]],
) -> None:
    out, report, _ = trained
    card = json.loads((out / "model_card.json").read_text())
    threshold = card["threshold"]
    assert threshold["policy"] == "false-alarm:0"
    assert threshold == report["threshold"]
    assert threshold["dev_false_alarm_rate"] == 0.0
    assert threshold["dev_clips"] == {"bonafide": 6, "spoof": 6}
    # The dev metrics in the card are measured at the chosen threshold.
    assert card["metrics"]["dev"]["clean"]["false_alarm_rate"] == 0.0
    assert card["metrics"]["dev"]["clean"]["miss_rate"] == pytest.approx(threshold["dev_miss_rate"])
    assert card["training"]["options"]["threshold"] == "false-alarm:0"
    # The drift reference: every dev clip under each calibration channel, as served.
    drift = card["drift_reference"]
    assert drift["source"]["clips"] == {"bonafide": 6, "spoof": 6}
    assert drift["source"]["channels"] == card["training"]["options"]["channels"]
    assert drift["windows"]["bonafide"] > 0 and drift["windows"]["spoof"] > 0
    assert sum(drift["features"]["speech_share"]["spoof"]) == drift["windows"]["spoof"]
    assert DriftReference.from_card(card) is not None
    detector = load_detector(out)
    assert detector.threshold == pytest.approx(threshold["p_spoof"])
    assert detector.settings.window_s == 2.0
    assert card["inference"]["quantization"] == "int8" and detector.settings.quantization == "int8"
    assert card["inference"]["backend"] == "torch" == detector.settings.backend
    assert card["encoder"]["spec"]["layers"] is None
    # The LFCC statistics follow the encoder's layers in the same linear head.
    assert card["spectral"]["spec"] == {"kind": "lfcc", "name": "lfcc", "layers": None}
    assert detector.spectral is not None
    assert detector.head.n_features_in_ == len(detector.settings.layers) * 2 * 32 + 120
    windows = np.stack([clip("bonafide", 999)[:32000], clip("spoof", 998)[:32000]])
    bona_llr, spoof_llr = detector.score_windows(windows)
    assert bona_llr > spoof_llr


def test_a_changed_spectral_recipe_is_refused(trained: tuple[Path, dict, list[LabelledItem]]) -> None:
    out, _, _ = trained
    card_path = out / "model_card.json"
    card = json.loads(card_path.read_text())
    card["spectral"]["identity"]["weights_sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ArtifactMismatchError, match="spectral front end mismatch"):
        load_detector(out)


def test_eval_report_has_eer_by_window_length(
    trained: tuple[Path, dict, list[LabelledItem]], tmp_path: Path
) -> None:
    out, report, dev = trained
    result = evaluate_detector(
        out, dev, out_dir=tmp_path / "report", progress=False, window_lengths=(1.0, 2.0)
    )
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    by_length = metrics["eer_by_window_length"]
    assert set(by_length) == {"1", "2"}
    # The detector's own window length reproduces the headline clip EER.
    assert by_length["2"]["clip_eer"] == pytest.approx(result.metrics.eer)
    # 3 s clips: 2 windows of 2 s (hop 1 s), 3 windows of 1 s.
    assert by_length["2"]["windows"] == 2 * len(dev) and by_length["1"]["windows"] == 3 * len(dev)
    assert 0.0 <= by_length["1"]["window_eer"] <= 1.0
    assert (tmp_path / "report" / "eer_by_window_length.png").stat().st_size > 0
    # Rates at the detector's threshold agree with the card's policy.
    assert result.metrics.false_alarm_rate == 0.0
    assert result.metrics.miss_rate == pytest.approx(report["threshold"]["dev_miss_rate"])
    assert llr_threshold(load_detector(out).threshold) == pytest.approx(report["threshold"]["llr"])
    assert report["dev"]["clean"]["eer"] == pytest.approx(result.metrics.eer)


def test_the_head_is_fitted_on_the_quantised_features_the_card_runs(
    trained: tuple[Path, dict, list[LabelledItem]], tmp_path: Path
) -> None:
    out, report, dev = trained
    cache = tmp_path / "cache" / "embeddings"
    caches = sorted(p.name for p in cache.iterdir() if not p.name.startswith("lfcc"))
    assert caches and all("+int8-" in name for name in caches), caches
    # eval runs the card's int8 encoder; training's dev scores came from the same features,
    # so even the calibration-sensitive metrics agree exactly.
    result = evaluate_detector(out, dev, progress=False)
    for key in ("cllr", "act_dcf", "min_dcf"):
        assert report["dev"]["clean"][key] == pytest.approx(getattr(result.metrics, key), abs=1e-9), key


def test_truncated_spec_keeps_just_the_layers_the_head_reads() -> None:
    base = EncoderSpec("whisper-ct2", "whisper-base")
    assert truncated_spec(base, (0, 1, 2, 3, 4), 7).layers == 4
    assert truncated_spec(base, (2,), 7).layers == 2
    assert truncated_spec(base, (0,), 7).layers == 1  # at least one layer runs
    assert truncated_spec(base, (0, 5), 7).layers == 5
    assert truncated_spec(base, (0, 6), 7) == base  # the last state is the normed full stack
    hf = EncoderSpec("hf", "/models/wav2vec2")
    assert truncated_spec(hf, (0, 1), 13) == hf  # HF truncation would change the last state


def test_encoder_names_map_to_specs() -> None:
    assert encoder_spec("whisper-base") == EncoderSpec("whisper-ct2", "whisper-base")
    assert encoder_spec("hf:/models/w2v2") == EncoderSpec("hf", "/models/w2v2")
    assert encoder_spec("lfcc") == EncoderSpec("lfcc", "lfcc")


def test_loso_command_fits_on_quantised_features(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    import io

    from spoofwatch.cli import main

    model, items = workspace
    manifest = write_manifest(tmp_path / "manifest.csv", items)
    out = io.StringIO()
    argv = ["loso", "--manifest", str(manifest), "--encoder", f"hf:{model}", "--window-s", "2"]
    argv += ["--hop-s", "1", "--layers", "0,1,2", "--C", "1", "--quantization", "int8", "--json"]
    assert main(argv, out) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["quantization"] == "int8" and summary["protocol"] == "leave-one-source-out"
    # Four sources (src-train-0/1, src-dev-0/1), each held out once; tones are easy to tell.
    assert set(summary["per_source_eer"]) == {"src-train-0", "src-train-1", "src-dev-0", "src-dev-1"}
    assert summary["n_bonafide"] == summary["n_spoof"] == 14
    assert summary["eer"] < 0.2
    caches = [p.name for p in (tmp_path / "cache" / "embeddings").iterdir()]
    assert caches and all("+int8-" in name for name in caches), caches


def test_a_levelled_card_is_fitted_and_evaluated_on_levelled_windows(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    options = tiny_options(
        model,
        layers=(0, 1, 2),
        name="tiny-levelled",
        spectral="lfcc-phase",  # the shipped recipe's front end
        level_dbfs=-20.0,
    )
    out = tmp_path / "detector"
    report = train_detector(items, None, out, options, progress=False)
    card = read_card(out)
    assert card["level"]["target_dbfs"] == -20.0
    assert card["spectral"]["spec"] == {"kind": "lfcc-phase", "name": "lfcc-phase", "layers": None}
    assert load_detector(out).head.n_features_in_ == 3 * 2 * 32 + 2 * 80
    caches = [p.name for p in (tmp_path / "cache" / "embeddings").iterdir()]
    assert caches and all(name.endswith("-level-20") for name in caches), caches
    # eval levels the windows as the card says: the same features, the same metrics
    result = evaluate_detector(out, [it for it in items if it.split == "dev"], progress=False)
    for key in ("cllr", "act_dcf", "min_dcf", "eer"):
        assert report["dev"]["clean"][key] == pytest.approx(getattr(result.metrics, key), abs=1e-9), key


def test_a_resynthesis_card_builds_its_block_alike_in_training_and_scoring(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """lfcc-phase-resynth: the head reads the original's 160 statistics and 40 phase
    residuals; eval (the detector's own path) gives the metrics training reported, and the
    card refuses to load where its vocoder is missing."""
    model, items = workspace
    monkeypatch.setenv(VOCODER_ENV, str(write_fake_vocoder(tmp_path / "fake_fargan")))
    options = tiny_options(model, name="tiny-resynth", spectral="lfcc-phase-resynth", level_dbfs=-26.0)
    out = tmp_path / "detector"
    report = train_detector(items, None, out, options, progress=False)
    spec = read_card(out)["spectral"]["spec"]
    assert spec == {"kind": "lfcc-phase-resynth", "name": "lfcc-phase-resynth", "layers": None}
    detector = load_detector(out)
    assert detector.head.n_features_in_ == 2 * 2 * 32 + 200
    window = clip("bonafide", 7, seconds=2.0)
    features = detector.features(window)
    assert features.shape == (1, 2 * 2 * 32 + 200)
    # The residual columns are the original's phase statistics minus the remake's.
    assert detector.spectral is not None
    levelled = normalise_level(torch.from_numpy(window)[None], RATE, -26.0)
    original, remade = (
        stored_precision(mean_std_pool([state], [0]).numpy())
        for state in detector.spectral.hidden_states(levelled)
    )
    np.testing.assert_allclose(features[0, -40:-20], (original - remade)[0, 60:80], atol=1e-5)
    np.testing.assert_allclose(features[0, -200:-40], original[0], atol=1e-5)
    result = evaluate_detector(out, [it for it in items if it.split == "dev"], progress=False)
    for key in ("cllr", "act_dcf", "min_dcf", "eer"):
        assert report["dev"]["clean"][key] == pytest.approx(getattr(result.metrics, key), abs=1e-9), key
    monkeypatch.setenv(VOCODER_ENV, str(tmp_path / "gone"))
    with pytest.raises(ModelError, match=r"lfcc-phase-resynth .*gone.*scripts/build_fargan\.sh"):
        load_detector(out)


def test_a_streamed_resynthesis_card_reads_the_clips_remake_in_training_and_scoring(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """lfcc-phase-resynth-streamed: the same block, against each window's span of the clip's
    streamed remake; the detector refuses windows without their remakes; eval and file
    scoring (which remake the clip as training did) give the metrics training reported."""
    model, items = workspace
    monkeypatch.setenv(VOCODER_ENV, str(write_fake_vocoder(tmp_path / "fake_fargan")))
    kind = "lfcc-phase-resynth-streamed"
    options = tiny_options(model, name="tiny-streamed", spectral=kind, level_dbfs=-26.0)
    out = tmp_path / "detector"
    report = train_detector(items, None, out, options, progress=False)
    assert read_card(out)["spectral"]["spec"] == {"kind": kind, "name": kind, "layers": None}
    assert "drift_reference" not in read_card(out)  # left to scripts/drift_reference.py
    detector = load_detector(out)
    assert detector.remake is not None and detector.head.n_features_in_ == 2 * 2 * 32 + 200
    samples = clip("bonafide", 7, seconds=3.5)
    config = WindowConfig(RATE, 2.0, 1.0, 0.5)
    windows = np.stack([w.samples for w in cut_windows(samples, config)])
    with pytest.raises(ModelError, match="needs each window's streamed remake"):
        detector.features(windows)
    remakes = remade_windows(detector.remake, samples, config)
    assert remakes.shape == windows.shape == (2, 2 * RATE)
    features = detector.features(windows, remakes)
    levelled = [normalise_level(torch.from_numpy(a), RATE, -26.0) for a in (windows, remakes)]
    original, remade = (
        stored_precision(mean_std_pool([LfccPhaseEncoder(2.0).hidden_states(a)[0]], [0]).numpy())
        for a in levelled
    )
    np.testing.assert_allclose(features[:, -40:-20], (original - remade)[:, 60:80], atol=1e-5)
    np.testing.assert_allclose(features[:, -200:-40], original, atol=1e-5)
    dev = [it for it in items if it.split == "dev"]
    result = evaluate_detector(out, dev, progress=False)
    for key in ("cllr", "act_dcf", "min_dcf", "eer"):
        assert report["dev"]["clean"][key] == pytest.approx(getattr(result.metrics, key), abs=1e-9), key
    scored = score_file(detector, dev[0].path, config)
    assert scored.error is None
    dev_windows = cut_windows(load_audio(dev[0].path, RATE).samples, config)
    expected = detector.score_windows(
        np.stack([w.samples for w in dev_windows]),
        remade_windows(detector.remake, load_audio(dev[0].path, RATE).samples, config),
    )
    np.testing.assert_allclose([w.score for w in scored.windows], expected, rtol=1e-6)


def test_calibration_channels_calibrate_and_report_on_other_dev_channels(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    dev = [it for it in items if it.split == "dev"]
    base = tiny_options(model, spectral="lfcc")
    plain = train_detector(items, None, tmp_path / "plain", base, progress=False)
    options = replace(base, calibration_channels=("clean", "telephone"))
    report = train_detector(items, None, tmp_path / "wide", options, progress=False)
    assert set(plain["dev"]) == {"clean"} and set(report["dev"]) == {"clean", "telephone"}
    assert set(read_card(tmp_path / "wide")["metrics"]["dev"]) == {"clean", "telephone"}
    narrow, wide = load_detector(tmp_path / "plain"), load_detector(tmp_path / "wide")
    # The head is fitted on the training channels alone, so it is the same...
    np.testing.assert_array_equal(narrow.head.coef_, wide.head.coef_)
    # ...and the calibration is the one fitted on the dev windows of both channels pooled.
    raw = {
        c: (wide.head.decision_function(e.select_layers(wide.settings.layers)), e.labels())
        for c in ("clean", "telephone")
        for e in [detector_embeddings(wide, dev, c, False)]
    }
    pooled = AffineCalibration.fit(
        np.concatenate([r[y == 1] for r, y in raw.values()]),
        np.concatenate([r[y == 0] for r, y in raw.values()]),
    )
    assert wide.calibration.scale == pytest.approx(pooled.scale)
    assert wide.calibration.offset == pytest.approx(pooled.offset)
    assert narrow.calibration != wide.calibration
    # The card's telephone metrics are what eval measures on that channel.
    result = evaluate_detector(tmp_path / "wide", dev, channel="telephone", progress=False)
    assert report["dev"]["telephone"]["cllr"] == pytest.approx(result.metrics.cllr, abs=1e-9)


def test_an_unknown_calibration_channel_is_refused_before_extraction(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    options = TrainOptions(encoder=f"hf:{model}", calibration_channels=("clean", "radio"))
    with pytest.raises(ConfigError, match="unknown channel 'radio'"):
        train_detector(items, None, tmp_path / "out", options, progress=False)
    assert not (tmp_path / "cache").exists()


def _extra_copies(root: Path) -> list[LabelledItem]:
    """Stand-ins for vocoder copies: noise labelled spoof, two of split train, two of dev."""
    items = []
    for i, split in enumerate(("train", "train", "dev", "dev")):
        path = root / f"copy{i}.wav"
        sf.write(path, clip("bonafide", 500 + i), RATE)
        items.append(
            LabelledItem(
                path,
                "spoof",
                f"copy{i}",
                system="copy",
                split=split,
                source=f"src-{split}-0",
                extra={"vocoder": "test vocoder", "pitch_factor": ("1.25", "0.8", "2.0", "0.5")[i]},
            )
        )
    return items


def test_extra_items_train_the_head_but_never_the_dev_measures(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    options = TrainOptions(f"hf:{model}", 2.0, 1.0, 1.0, ("clean",), layers=(0, 1, 2), C=1.0, name="extra")
    extra = _extra_copies(tmp_path / "audio")
    train_detector(items, None, tmp_path / "plain", options, progress=False)
    report = train_detector(items, None, tmp_path / "extra", options, progress=False, extra_items=extra)
    card = read_card(tmp_path / "extra")
    assert card["training"]["extra_train_items"] == {"copy": 2}  # the dev-split copies are left out
    assert card["training"]["extra_train_provenance"] == {
        "copy": {"made_by": ["test vocoder"], "pitch_factor_range": [0.8, 1.25]}
    }
    assert card["training"]["train_items"] == {"bonafide": 8, "spoof": 8}
    assert card["training"]["dev_items"] == {"bonafide": 6, "spoof": 6}
    assert report["threshold"]["dev_clips"] == {"bonafide": 6, "spoof": 6}
    plain, with_extra = load_detector(tmp_path / "plain").head, load_detector(tmp_path / "extra").head
    assert not np.allclose(plain.coef_, with_extra.coef_)
    # The extra items through another channel: as many windows, other features.
    windows = card["training"]["train_windows"]
    assert windows > read_card(tmp_path / "plain")["training"]["train_windows"]
    telephone = replace(options, extra_channels=("telephone",))
    train_detector(items, None, tmp_path / "tel", telephone, progress=False, extra_items=extra)
    assert read_card(tmp_path / "tel")["training"]["train_windows"] == windows
    assert read_card(tmp_path / "tel")["training"]["options"]["extra_channels"] == ["telephone"]
    assert not np.allclose(load_detector(tmp_path / "tel").head.coef_, with_extra.coef_)
    with pytest.raises(ConfigError, match="unknown channel 'radio'"):
        radio = replace(options, extra_channels=("radio",))
        train_detector(items, None, tmp_path / "x", radio, extra_items=extra)


def test_a_malformed_pitch_factor_of_an_extra_item_is_refused_before_extraction(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    extra = [replace(it, extra={"pitch_factor": "fast"}) for it in _extra_copies(tmp_path / "audio")]
    options = TrainOptions(f"hf:{model}", 2.0, 1.0, 1.0, ("clean",), layers=(0, 1, 2), C=1.0)
    with pytest.raises(DataError, match=r"extra item copy0: expected a number in pitch_factor, found 'fast'"):
        train_detector(items, None, tmp_path / "out", options, progress=False, extra_items=extra)
    assert not (tmp_path / "cache").exists()


def test_loso_command_trains_on_extra_manifests_without_scoring_them(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    import io

    from spoofwatch.cli import main

    model, items = workspace
    write_manifest(tmp_path / "manifest.csv", items)
    write_manifest(tmp_path / "extra.csv", _extra_copies(tmp_path / "audio"))
    out = io.StringIO()
    argv = [
        "loso",
        "--manifest",
        str(tmp_path / "manifest.csv"),
        "--extra-manifest",
        str(tmp_path / "extra.csv"),
    ]
    argv += [
        "--encoder",
        f"hf:{model}",
        "--window-s",
        "2",
        "--hop-s",
        "1",
        "--layers",
        "0,1,2",
        "--C",
        "1",
        "--json",
    ]
    assert main(argv, out) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["extra_items"] == 4 and summary["extra_manifests"] == [str(tmp_path / "extra.csv")]
    assert summary["extra_channels"] == "clean,telephone"  # the training channels
    assert summary["n_bonafide"] == summary["n_spoof"] == 14  # the copies are never scored
    assert "copy" not in summary["per_system"]


def test_loso_command_holds_fold_groups_out_together(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]], capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from spoofwatch.cli import main

    model, items = workspace
    manifest = write_manifest(tmp_path / "manifest.csv", items)
    base = ["loso", "--manifest", str(manifest), "--encoder", f"hf:{model}", "--window-s", "2"]
    base += ["--hop-s", "1", "--layers", "0,1,2", "--C", "1", "--json"]
    out = io.StringIO()
    assert main([*base, "--fold-group", "src-train-*"], out) == 0
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["fold_groups"] == ["src-train-*"]
    assert set(summary["per_source_eer"]) == {"src-train-*", "src-dev-0", "src-dev-1"}
    assert set(summary["per_source_bonafide_mean"]) == {"src-train-*", "src-dev-0", "src-dev-1"}
    assert summary["n_bonafide"] == summary["n_spoof"] == 14
    assert main([*base, "--fold-group", "asterisk*"], io.StringIO()) != 0
    assert "fold groups ['asterisk*'] match no source" in capsys.readouterr().err


def test_the_drift_reference_samples_a_large_dev_split_evenly_per_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spoofwatch.train import pipeline

    monkeypatch.setattr(pipeline, "DRIFT_REFERENCE_CLIPS_PER_CLASS", 3)
    dev = [LabelledItem(Path(f"/x/b{i:02d}.wav"), "bonafide", f"b{i:02d}") for i in range(9)]
    dev += [LabelledItem(Path(f"/x/s{i}.wav"), "spoof", f"s{i}") for i in range(2)]
    chosen = pipeline.drift_sample(list(reversed(dev)))
    assert [it.utt_id for it in chosen] == ["b00", "b03", "b06", "s0", "s1"]


def test_dev_clips_shorter_than_dev_min_s_are_left_out_of_calibration_and_the_threshold(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    model, items = workspace
    for utt in ("dev-bonafide-0", "dev-spoof-0"):  # shorter than a 2 s window: tiled when scored
        item = next(it for it in items if it.utt_id == utt)
        sf.write(item.path, clip(item.label, 7, seconds=1.0), RATE)
    options = tiny_options(model, threshold="eer", dev_min_s=2.0)
    report = train_detector(items, None, tmp_path / "kept", options, progress=False)
    assert report["threshold"]["dev_clips"] == {"bonafide": 5, "spoof": 5}
    card = json.loads((tmp_path / "kept" / "model_card.json").read_text())
    assert card["training"]["dev_items"] == {"bonafide": 5, "spoof": 5}
    assert card["training"]["options"]["dev_min_s"] == 2.0
    every = train_detector(
        items, None, tmp_path / "every", tiny_options(model, threshold="eer"), progress=False
    )
    assert every["threshold"]["dev_clips"] == {"bonafide": 6, "spoof": 6}
    with pytest.raises(DataError, match="dev_min_s 10: expected clips of both classes at least that long"):
        train_detector(items, None, tmp_path / "none", tiny_options(model, dev_min_s=10.0), progress=False)
    with pytest.raises(ConfigError, match="dev_min_s: expected a number of seconds >= 0"):
        train_detector(items, None, tmp_path / "bad", tiny_options(model, dev_min_s=-1.0), progress=False)
    short = [it for it in items if it.split == "train"][:2]  # train-bonafide-0 and train-spoof-0
    for item in short:
        sf.write(item.path, clip(item.label, 8, seconds=1.0), RATE)
    options = tiny_options(model, threshold="eer", train_min_s=2.0)
    train_detector(items, None, tmp_path / "trimmed", options, progress=False)
    card = json.loads((tmp_path / "trimmed" / "model_card.json").read_text())
    assert card["training"]["train_items"] == {"bonafide": 7, "spoof": 7}


def test_an_mlp_head_is_trained_recorded_loaded_and_scored(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]]
) -> None:
    from spoofwatch.model.mlp_head import MLPHead

    model, items = workspace
    mlp = {"mlp_hidden": 8, "mlp_epochs": 20, "mlp_dropout": 0.0, "mlp_input_dropout": 0.0}
    options = tiny_options(model, head="mlp", mlp_learning_rate=1e-2, spectral="lfcc", **mlp)
    train_detector(items, None, tmp_path / "mlp", options, progress=False)
    card = read_card(tmp_path / "mlp")
    assert card["head"]["kind"] == "mlp" and card["head"]["hidden"] == 8
    assert card["head"]["training"]["epochs"] == 20 and card["training"]["options"]["head"] == "mlp"
    detector = load_detector(tmp_path / "mlp")
    assert isinstance(detector.head, MLPHead)
    assert detector.head.n_features_in_ == 2 * 2 * 32 + 120
    windows = np.stack([clip("bonafide", 999)[:32000], clip("spoof", 998)[:32000]])
    bona_llr, spoof_llr = detector.score_windows(windows)
    assert bona_llr > spoof_llr
    # A card whose stated head is not the one its tensors hold is refused, naming both.
    card["head"]["kind"] = "logistic-regression"
    (tmp_path / "mlp" / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelError, match=r"the card's head is 'logistic-regression' but .* holds a head of kind 'mlp'"
    ):
        load_detector(tmp_path / "mlp")
    with pytest.raises(ConfigError, match=r"head: expected one of \['linear', 'mlp'\], found 'forest'"):
        train_detector(items, None, tmp_path / "x", tiny_options(model, head="forest"), progress=False)
    with pytest.raises(ConfigError, match=r"dropouts in \[0, 1\)"):
        train_detector(
            items, None, tmp_path / "x", tiny_options(model, head="mlp", mlp_dropout=1.0), progress=False
        )


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_a_card_scores_a_window_as_its_head_was_fitted_on_it(
    tmp_path: Path, workspace: tuple[Path, list[LabelledItem]], head: str
) -> None:
    """The head is fitted on the cache's float16 features; the detector (file, stream) must
    score the very same values, or an MLP head's scores run away on off-grid columns."""
    model, items = workspace
    mlp = {"mlp_hidden": 8, "mlp_epochs": 5} if head == "mlp" else {}
    options = tiny_options(model, head=head, spectral="lfcc-phase", level_dbfs=-26.0, **mlp)
    train_detector(items, None, tmp_path / "card", options, progress=False)
    detector = load_detector(tmp_path / "card")
    dev = [it for it in items if it.split == "dev"]
    cached = window_scores(detector, detector_embeddings(detector, dev[:2], "clean", progress=False))
    streamed = [
        w.score for it in dev[:2] for w in score_file(detector, it.path, window_config(detector)).windows
    ]
    assert len(streamed) == len(cached) > 2
    np.testing.assert_allclose(streamed, cached, rtol=1e-6, atol=1e-9)
