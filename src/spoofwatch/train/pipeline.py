"""``spoofwatch train``: corpus → cached embeddings (per channel) → head → calibration → artifact."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch import __version__
from spoofwatch.errors import ConfigError, DataError, ModelError
from spoofwatch.model.artifact import save_detector
from spoofwatch.model.backend import check_backend, runtime_encoder
from spoofwatch.model.detector import DetectorSettings
from spoofwatch.model.encoders.base import Encoder
from spoofwatch.model.encoders.registry import EncoderSpec, build_encoder
from spoofwatch.model.heads import HEAD_KINDS
from spoofwatch.model.level import check_target
from spoofwatch.model.mlp_head import MLPOptions
from spoofwatch.model.quantize import check_quantization
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import LabelledItem, at_least, check_no_leakage
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.fit import clip_scores, evaluate_set, fit_head
from spoofwatch.train.threshold import choose_threshold, parse_policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    encoder: str = "whisper-base"
    window_s: float = 4.0
    hop_s: float = 1.0
    train_hop_s: float = 2.0
    channels: tuple[str, ...] = ("clean", "telephone")
    # Channels of the dev windows that calibrate the head and set the threshold (and on
    # which dev metrics are reported); None = the training channels. Calibrating on the
    # conditions the detector meets (callers at any level through G.711) keeps actDCF
    # close to minDCF there too, not only on the channels it was fitted on.
    calibration_channels: tuple[str, ...] | None = None
    # Channels the extra training items (train_detector's extra_items) go through; None =
    # ``channels``.
    extra_channels: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    C: float = 0.01
    name: str = "spoofwatch-detector"
    threshold: str = "bayes"
    # Run only as many Whisper layers as the head reads (see whisper_ct2.build_whisper_encoder).
    truncate_encoder: bool = False
    # How the detector runs (the card's inference section); the head is fitted on the
    # features the encoder gives when run so (feature_encoder).
    quantization: str = "none"
    backend: str = "torch"  # or "onnxruntime": the head is fitted on that runtime's features
    max_batch: int = 16
    # A spectral front end fused into the same linear head: None, "lfcc" or "lfcc-phase".
    spectral: str | None = None
    spectral_weight: float = 2.0
    # Bring every window to this active speech level (dBFS) before the encoders, in
    # training and in the card (model.level); None = windows as they come.
    level_dbfs: float | None = None
    # Precision of the standardised training matrix the head's solver reads: "float32"
    # halves the fit's memory on a large corpus (its coefficients differ slightly).
    fit_precision: str = "float64"
    # No source weighs more than this many clips in the fit (train.fit.source_weights);
    # None: every clip weighs 1.
    source_cap: int | None = None
    # Bona fide and spoof weigh the same within each stratum of these manifest columns (or
    # "length": clips shorter than a window against the rest); () = class balance only.
    balance_by: tuple[str, ...] = ()
    # Dev clips shorter than this many seconds are left out of calibration, the threshold
    # and the dev figures: streaming scores whole windows, and clips shorter than one are
    # scored on a window that repeats them. 0 keeps every dev clip.
    dev_min_s: float = 0.0
    # Training clips of the manifests shorter than this many seconds are left out: a head
    # learns "one window repeating itself" as the class that has most of them (the command
    # word collections, all bona fide). Extra items (vocoder copies) are kept: a copy is a
    # spoof, so its repeated window teaches the opposite. 0 keeps every clip.
    train_min_s: float = 0.0
    # The head: "linear" (standardised logistic regression, C above) or "mlp" (one hidden
    # layer, model.mlp_head; the mlp_* options below, C unused).
    head: str = "linear"
    mlp_hidden: int = MLPOptions.hidden
    mlp_epochs: int = MLPOptions.epochs
    mlp_dropout: float = MLPOptions.dropout
    mlp_input_dropout: float = MLPOptions.input_dropout
    mlp_weight_decay: float = MLPOptions.weight_decay
    mlp_learning_rate: float = MLPOptions.learning_rate
    mlp_seed: int = MLPOptions.seed


# TrainOptions' fields that choose and shape the head (also `train`/`loso`'s flags).
HEAD_FIELDS = (
    "head",
    "mlp_hidden",
    "mlp_epochs",
    "mlp_dropout",
    "mlp_input_dropout",
    "mlp_weight_decay",
    "mlp_learning_rate",
    "mlp_seed",
)


def mlp_options(options: Any) -> MLPOptions | None:
    """The MLP head's options (``options``: TrainOptions or parsed flags with the
    ``HEAD_FIELDS``), or None for a linear head; an unknown head or bad value is refused."""
    if options.head not in HEAD_KINDS:
        raise ConfigError(f"head: expected one of {list(HEAD_KINDS)}, found {options.head!r}")
    if options.head == "linear":
        return None
    try:
        return MLPOptions(**{name.removeprefix("mlp_"): getattr(options, name) for name in HEAD_FIELDS[1:]})
    except ModelError as exc:
        raise ConfigError(str(exc)) from None


def encoder_spec(name: str) -> EncoderSpec:
    """``whisper-base`` / ``whisper-tiny.en`` (pinned CT2 weights), ``hf:PATH_OR_ID``, or
    ``lfcc`` (the spectral front end alone, hidden state 0: a baseline)."""
    if name.startswith("hf:"):
        return EncoderSpec(kind="hf", name=name[3:])
    if name == "lfcc":
        return EncoderSpec(kind="lfcc", name="lfcc")
    return EncoderSpec(kind="whisper-ct2", name=name)


def truncated_spec(spec: EncoderSpec, layers: Sequence[int], num_hidden_states: int) -> EncoderSpec:
    """The spec of the shallowest encoder whose hidden states include ``layers`` unchanged.

    Only Whisper (CT2) truncation keeps the lower states identical (its final layer norm
    is dropped when truncated); other encoders keep their full depth.
    """
    if spec.kind != "whisper-ct2":
        logger.warning("truncate_encoder: only whisper-ct2 encoders are truncated; %s kept whole", spec.kind)
        return spec
    depth = max(1, max(layers))
    if depth >= num_hidden_states - 1:
        return spec
    return replace(spec, layers=depth)


def feature_encoder(
    spec: EncoderSpec,
    window_s: float,
    truncate_to: Sequence[int] | None,
    quantization: str,
    backend: str = "torch",
) -> tuple[EncoderSpec, Encoder, Encoder]:
    """(spec, float32 encoder, encoder as the card runs it) for extracting training features.

    With ``truncate_to`` (the head's layers) the encoder runs only as deep as they need; its
    states are the full encoder's. The head is fitted on the features of the encoder as the
    card runs it: a quantised encoder's states are shifted, and a head fitted on float32
    states would inherit that shift as miscalibration (docs/benchmarks.md, int8 accuracy).
    """
    float_encoder = build_encoder(spec, window_s)
    if truncate_to is not None:
        shallow = truncated_spec(spec, truncate_to, float_encoder.identity.num_hidden_states)
        if shallow != spec:
            spec = shallow
            float_encoder = build_encoder(spec, window_s)
    return spec, float_encoder, runtime_encoder(float_encoder, check_quantization(quantization), backend)


# lfcc-phase adds per-band phase coherence to the LFCC frames (model/encoders/phase.py);
# lfcc-phase-resynth adds the phase residual against a FARGAN remake of each window
# (model/encoders/resynthesis.py; needs scripts/build_fargan.sh); -streamed reads the same
# residual against the stream's remake, every second vocoded once (model/remake.py).
SPECTRAL_FRONT_ENDS = ("lfcc", "lfcc-phase", "lfcc-phase-resynth", "lfcc-phase-resynth-streamed")


def spectral_front_end_spec(name: str | None) -> EncoderSpec | None:
    if name is None or name == "none":
        return None
    if name not in SPECTRAL_FRONT_ENDS:
        expected = ", ".join(SPECTRAL_FRONT_ENDS)
        raise ConfigError(f"spectral front end {name!r}: expected one of {expected} or none")
    return EncoderSpec(kind=name, name=name)


def split_train_dev(
    items: Sequence[LabelledItem], dev_items: Sequence[LabelledItem] | None
) -> tuple[list[LabelledItem], list[LabelledItem]]:
    if dev_items is not None:
        return list(items), list(dev_items)
    train = [it for it in items if it.split == "train"]
    dev = [it for it in items if it.split == "dev"]
    if not train or not dev:
        raise DataError(
            "expected a dev set: give --dev-manifest/--dev-protocol, or a manifest whose split "
            f"column has train and dev rows (found {len(train)} train, {len(dev)} dev)"
        )
    return train, dev


def _pitch_factor(item: LabelledItem) -> float:
    text = item.extra["pitch_factor"]
    try:
        return float(text)
    except ValueError:
        raise DataError(
            f"extra item {item.utt_id}: expected a number in pitch_factor, found {text!r}"
        ) from None


def describe_extra_items(items: Sequence[LabelledItem]) -> dict[str, dict[str, Any]]:
    """Per system of the extra training items (their counts are ``extra_train_items``): what
    made them (a ``vocoder`` column) and the range of their ``pitch_factor`` column, where
    the manifest has them."""
    described: dict[str, dict[str, Any]] = {}
    for system in sorted({it.system for it in items}):
        chosen = [it for it in items if it.system == system]
        entry: dict[str, Any] = {}
        makers = sorted({it.extra["vocoder"] for it in chosen if it.extra.get("vocoder")})
        if makers:
            entry["made_by"] = makers
        factors = [_pitch_factor(it) for it in chosen if it.extra.get("pitch_factor")]
        if factors:
            entry["pitch_factor_range"] = [min(factors), max(factors)]
        described[system] = entry
    return described


def train_detector(
    items: Sequence[LabelledItem],
    dev_items: Sequence[LabelledItem] | None,
    out: Path,
    options: TrainOptions,
    *,
    progress: bool = True,
    extra_items: Sequence[LabelledItem] = (),
) -> dict[str, Any]:
    """Fit, calibrate and save a detector. ``extra_items`` (e.g. vocoder copies of bona fide
    clips) join the training items only; those of split ``dev`` are left out, so a copy of
    a dev clip never trains the head that dev measures."""
    policy = parse_policy(options.threshold)  # fail before hours of extraction, not after
    mlp = mlp_options(options)
    if options.source_cap is not None and options.source_cap < 1:
        raise ConfigError(f"source_cap: expected a positive number of clips, found {options.source_cap}")
    if options.fit_precision not in ("float64", "float32"):
        raise ConfigError(f"fit_precision: expected float64 or float32, found {options.fit_precision!r}")
    check_quantization(options.quantization)
    check_backend(options.backend)
    if options.level_dbfs is not None:
        check_target(options.level_dbfs)
    spectral_spec = spectral_front_end_spec(options.spectral)
    dev_channels = options.calibration_channels or options.channels
    extra_channels = options.channels if options.extra_channels is None else options.extra_channels
    for channel in (*options.channels, *dev_channels, *extra_channels):
        get_channel(channel)
    train, dev = split_train_dev(items, dev_items)
    train = at_least(train, options.train_min_s, "train_min_s")
    dev = at_least(dev, options.dev_min_s, "dev_min_s")
    extra_train = [it for it in extra_items if it.split != "dev"]
    if len(extra_train) < len(extra_items):
        logger.info("extra items: %d of split dev left out", len(extra_items) - len(extra_train))
    extra_provenance = describe_extra_items(extra_train)  # before extraction: bad cells fail fast
    for problem in check_no_leakage(train, dev):
        logger.warning("train/dev leakage: %s", problem)
    spec, float_encoder, encoder = feature_encoder(
        encoder_spec(options.encoder),
        options.window_s,
        options.layers if options.truncate_encoder else None,
        options.quantization,
        options.backend,
    )
    rate = encoder.identity.sample_rate
    train_window = WindowConfig(rate, options.window_s, options.train_hop_s)
    dev_window = WindowConfig(rate, options.window_s, options.hop_s)
    spectral = None if spectral_spec is None else build_encoder(spectral_spec, options.window_s)

    def embed(items: list[LabelledItem], window: WindowConfig, channels: Sequence[str]) -> list[EmbeddingSet]:
        return [
            extract_with_spectral(
                items, encoder, spectral, window, channel=c, progress=progress, level_dbfs=options.level_dbfs
            )
            for c in channels
        ]

    train_sets = embed(train, train_window, options.channels)
    if extra_train:
        train_sets += embed(extra_train, train_window, extra_channels)
    dev_sets = embed(dev, dev_window, dev_channels)
    fitted = fit_head(
        train_sets,
        dev_sets,
        layers=options.layers,
        C=options.C,
        spectral_weight=options.spectral_weight,
        fit_dtype=np.float32 if options.fit_precision == "float32" else np.float64,
        source_cap=options.source_cap,
        balance_by=options.balance_by,
        window_s=options.window_s,
        mlp=mlp,
    )
    # One threshold for every channel: dev clips of all channels pooled.
    pooled = [clip_scores(fitted, dev_set) for dev_set in dev_sets]
    threshold = choose_threshold(
        policy, np.concatenate([b for b, _ in pooled]), np.concatenate([s for _, s in pooled])
    )
    dev_metrics = {
        channel: evaluate_set(fitted, dev_set, threshold_llr=threshold.llr).to_dict()
        for channel, dev_set in zip(dev_channels, dev_sets, strict=True)
    }
    settings = DetectorSettings(
        window_s=options.window_s,
        hop_s=options.hop_s,
        layers=fitted.layers,
        threshold=threshold.p_spoof,
        quantization=options.quantization,
        backend=options.backend,
        max_batch=options.max_batch,
        level_dbfs=options.level_dbfs,
    )
    identity = float_encoder.identity
    if options.truncate_encoder and spec.layers is None:  # layers were chosen on dev
        spec = truncated_spec(spec, fitted.layers, identity.num_hidden_states)
        if spec.layers is not None:
            identity = build_encoder(spec, options.window_s).identity
    licences: dict[str, int] = {}
    for item in [*train, *extra_train]:
        key = item.extra.get("license", "unknown")
        licences[key] = licences.get(key, 0) + 1
    card_extra: dict[str, Any] = {
        "name": options.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "spoofwatch_version": __version__,
        "training": {
            "options": asdict(options),
            "train_items": {
                "bonafide": sum(i.label == "bonafide" for i in train),
                "spoof": sum(i.label == "spoof" for i in train),
            },
            "extra_train_items": dict(Counter(item.system for item in extra_train)),
            "extra_train_provenance": extra_provenance,
            "dev_items": {
                "bonafide": sum(i.label == "bonafide" for i in dev),
                "spoof": sum(i.label == "spoof" for i in dev),
            },
            "train_windows": int(sum(len(s.features) for s in train_sets)),
            "sources": sorted({i.source for i in train}),
            "training_audio_licences": licences,
            "licence_note": (
                "The weights of this head are derived from the training audio listed above; "
                "several sources are non-commercial (CC BY-NC-ND) or state no licence. "
                "Check them before commercial use."
            ),
            "layer_search_dev_window_eer": fitted.layer_search,
        },
        "threshold": threshold.to_card(),
        "metrics": {"dev": dev_metrics},
    }
    save_detector(
        out,
        head=fitted.head,
        calibration=fitted.calibration,
        settings=settings,
        encoder_spec=spec,
        encoder_identity=identity,
        card_extra=card_extra,
        spectral=None if spectral is None or spectral_spec is None else (spectral_spec, spectral.identity),
    )
    add_drift_reference(out, dev, dev_channels, options.hop_s)
    return {
        "out": str(out),
        "layers": list(fitted.layers),
        "threshold": threshold.to_card(),
        "dev": dev_metrics,
    }


# Streaming every dev clip of a large corpus through the pipeline again would cost as much
# as extracting it; the reference's distributions are stable well before this many clips.
DRIFT_REFERENCE_CLIPS_PER_CLASS = 400


def drift_sample(dev: Sequence[LabelledItem]) -> list[LabelledItem]:
    """At most ``DRIFT_REFERENCE_CLIPS_PER_CLASS`` dev clips of each class, picked evenly
    from the class's clips sorted by utt_id (deterministic)."""
    chosen: list[LabelledItem] = []
    for label in ("bonafide", "spoof"):
        mine = sorted((it for it in dev if it.label == label), key=lambda it: it.utt_id)
        if len(mine) > DRIFT_REFERENCE_CLIPS_PER_CLASS:
            step = len(mine) / DRIFT_REFERENCE_CLIPS_PER_CLASS
            mine = [mine[int(i * step)] for i in range(DRIFT_REFERENCE_CLIPS_PER_CLASS)]
        chosen += mine
    return chosen


def add_drift_reference(
    out: Path, dev: Sequence[LabelledItem], channels: Sequence[str], hop_s: float
) -> None:
    """The saved detector's ``drift_reference`` (spoofwatch.ops.drift): its dev clips under
    the calibration channels, streamed through the pipeline as the node will see them."""
    from spoofwatch.model.artifact import CARD_FILE, load_detector
    from spoofwatch.ops.drift import CARD_KEY
    from spoofwatch.ops.drift_reference import drift_reference

    detector = load_detector(out)
    if detector.remake is not None:
        # Streaming every dev clip's remake again costs as much as the dev extraction did;
        # scripts/drift_reference.py adds the section when wanted (the packaged resynth card's).
        logger.info("no drift reference for a streamed-remake card: see scripts/drift_reference.py")
        return
    chosen = drift_sample(dev)
    clips = [(item.utt_id, item.label, item.path) for item in chosen]
    about: dict[str, Any] = {"made_by": "spoofwatch train", "split": "dev"}
    if len(chosen) < len(dev):
        about["sampled"] = f"{len(chosen)} of {len(dev)} dev clips, evenly by utt_id within each class"
    section = drift_reference(detector, clips, channels, about, hop_s=hop_s)
    card_path = out / CARD_FILE
    card = json.loads(card_path.read_text())
    card[CARD_KEY] = section
    card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
