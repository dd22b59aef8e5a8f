"""``spoofwatch retrain``: a new head from the base card's training features plus analysts'
feedback, fitted and calibrated by the rules ``train`` used for the base.

The encoder stays frozen, so only the head is refitted: on the base card's training
windows (re-read from the embedding cache, extracted where missing, through the same
channels, windows, level normalisation and runtime as the base card records), plus each
training-side feedback window weighted ``feedback_weight``. The layers are the base's (the
feedback holds only the head input, those layers' features). Calibration and the threshold
policy use the base's dev windows and calibration channels, as ``train`` does. The
candidate card records its lineage: base identity, feedback ids, time and command.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spoofwatch import __version__
from spoofwatch.errors import ConfigError, DataError
from spoofwatch.learning.feedback_store import FeedbackRecord, read_feedback
from spoofwatch.learning.holdout import DEFAULT_HOLDOUT, check_fraction, split_feedback
from spoofwatch.model.artifact import detector_dir, load_detector, read_card, save_detector
from spoofwatch.model.calibration import AffineCalibration
from spoofwatch.model.detector import Detector
from spoofwatch.model.encoders.base import EncoderIdentity
from spoofwatch.model.encoders.registry import EncoderSpec
from spoofwatch.model.identity import card_identity, card_sha256, feature_space
from spoofwatch.stream.core.windowing import WindowConfig
from spoofwatch.train.corpus import LabelledItem, read_manifest
from spoofwatch.train.extract import EmbeddingSet, extract_with_spectral
from spoofwatch.train.fit import (
    FittedHead,
    StackedRows,
    clip_scores,
    column_weights,
    evaluate_set,
    new_head,
    stack,
)
from spoofwatch.train.pipeline import TrainOptions, mlp_options, split_train_dev
from spoofwatch.train.threshold import choose_threshold, parse_policy

logger = logging.getLogger(__name__)

DEFAULT_FEEDBACK_WEIGHT = 5.0


@dataclass(frozen=True)
class RetrainOptions:
    """``feedback_weight``: each feedback window counts as this many training windows;
    ``holdout``: the fraction of feedback streams kept out of training for the canary;
    ``manifests``/``dev_manifests``/``extra_manifests``: the base's training data (None =
    the manifests the base card names); ``name``: the candidate's name (None = the base's)."""

    feedback_weight: float = DEFAULT_FEEDBACK_WEIGHT
    holdout: float = DEFAULT_HOLDOUT
    manifests: tuple[str, ...] | None = None
    dev_manifests: tuple[str, ...] | None = None
    extra_manifests: tuple[str, ...] | None = None
    name: str | None = None
    command: str = ""
    progress: bool = True


def base_train_options(card: dict[str, Any]) -> TrainOptions:
    """The ``TrainOptions`` a card records (lists as tuples; options it lacks at defaults)."""
    recorded = (card.get("training") or {}).get("options")
    if not isinstance(recorded, dict):
        raise DataError("the base card records no training options (training.options); cannot retrain it")
    known = {f.name for f in fields(TrainOptions)}
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in known
    }
    return replace(TrainOptions(), **values)


def _manifests(card: dict[str, Any], options: RetrainOptions) -> dict[str, list[str]]:
    named = (card.get("training") or {}).get("manifests") or {}
    chosen = {
        "train": list(options.manifests) if options.manifests is not None else list(named.get("train") or []),
        "dev": list(options.dev_manifests)
        if options.dev_manifests is not None
        else list(named.get("dev") or []),
        "extra": list(options.extra_manifests)
        if options.extra_manifests is not None
        else list(named.get("extra") or []),
    }
    if not chosen["train"]:
        raise DataError(
            "the base card names no training manifests (training.manifests; cards from `spoofwatch train` "
            "do not): give the base's training data with --manifest (and --dev-manifest, "
            "--extra-manifest as it was trained)"
        )
    return {key: [str(Path(p).resolve()) for p in paths] for key, paths in chosen.items()}


def _read(paths: Sequence[str]) -> list[LabelledItem]:
    return [item for path in paths for item in read_manifest(path)]


def check_feedback_fits(records: Sequence[FeedbackRecord], card: dict[str, Any], n_features: int) -> None:
    """Refuse feedback whose features another feature space (encoder, layers, runtime) made."""
    space = feature_space(card)
    wrong_dim = [r.id for r in records if r.dim != n_features]
    if wrong_dim:
        raise DataError(
            f"feedback {wrong_dim[:5]} ({len(wrong_dim)} in all): expected {n_features} features per window "
            "(the base head's input), found another width; it was scored by a detector with other layers"
        )
    other = [r.id for r in records if r.feature_space is not None and r.feature_space != space]
    if other:
        raise DataError(
            f"feedback {other[:5]} ({len(other)} in all) was computed in another feature space than the base "
            "card's (encoder, layers, level or runtime differ); retrain from the card that scored it"
        )


class _WithFeedback:
    """Base training rows, then the feedback windows (``RowChunks`` for the head's fit)."""

    def __init__(self, base: StackedRows, feedback: NDArray[np.float32]) -> None:
        self.base = base
        self.feedback = feedback
        self.shape = (base.shape[0] + len(feedback), base.shape[1])

    def chunks(self) -> Iterator[NDArray[np.float32]]:
        yield from self.base.chunks()
        if len(self.feedback):
            yield self.feedback


def _feedback_rows(
    records: Sequence[FeedbackRecord], width: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    if not records:
        return np.zeros((0, width), np.float32), np.zeros(0, np.int64)
    x = np.concatenate([r.features for r in records]).astype(np.float32)
    y = np.concatenate([np.full(r.window_count, 1 if r.is_bonafide else 0, np.int64) for r in records])
    return x, y


def next_version(card: dict[str, Any]) -> int:
    """The base's integer ``version`` plus one (a card without one counts as version 1)."""
    try:
        return int(card.get("version", 1)) + 1
    except (TypeError, ValueError):
        return 2


def retrain(
    base: str | Path | None,
    feedback_dir: str | Path,
    out: str | Path,
    options: RetrainOptions = RetrainOptions(),
) -> dict[str, Any]:
    """Fit, calibrate and write a candidate card; returns its summary (the lineage and metrics)."""
    if not (options.feedback_weight > 0 and np.isfinite(options.feedback_weight)):
        raise ConfigError(f"feedback weight: expected a positive number, found {options.feedback_weight}")
    check_fraction(options.holdout)
    base_dir = detector_dir(None if base is None else str(base))
    card = read_card(base_dir)
    identity = card_identity(base_dir)
    train_options = base_train_options(card)
    policy = parse_policy(train_options.threshold)
    manifests = _manifests(card, options)
    records = read_feedback(feedback_dir)
    if not records:
        raise DataError(f"{feedback_dir}: the feedback store holds no records; nothing to retrain on")
    detector = load_detector(base_dir)
    check_feedback_fits(records, detector.card, detector.head.n_features_in_)
    train_fb, held_fb = split_feedback(records, options.holdout)
    if not train_fb:
        raise DataError(
            f"all {len(records)} feedback records fall in the held-out streams (holdout {options.holdout}); "
            "give feedback on more streams or a smaller --holdout"
        )
    train_items, dev_items = split_train_dev(_read(manifests["train"]), _read(manifests["dev"]) or None)
    extra_items = [it for it in _read(manifests["extra"]) if it.split != "dev"]
    train_sets, dev_sets = _base_features(
        detector, train_options, train_items, dev_items, extra_items, options
    )
    layers = detector.settings.layers
    fb_x, fb_y = _feedback_rows(train_fb, detector.head.n_features_in_)
    rows = StackedRows(train_sets, layers)
    labels = np.concatenate([rows.labels(), fb_y])
    weights = np.concatenate([np.ones(rows.shape[0]), np.full(len(fb_y), options.feedback_weight)])
    head = new_head(
        train_options.C,
        np.float32 if train_options.fit_precision == "float32" else np.float64,
        mlp_options(train_options),
    ).fit(
        _WithFeedback(rows, fb_x),
        labels,
        column_weights(train_sets, layers, train_options.spectral_weight),
        sample_weight=weights,
    )
    dx, dy = stack(dev_sets, layers)
    raw = head.decision_function(dx)
    calibration = AffineCalibration.fit(raw[dy == 1], raw[dy == 0])
    if calibration.scale <= 0:
        # A negative scale would hide the inversion: the card would score right only
        # because its calibration turned a backwards head round.
        raise DataError(
            f"the refitted head ranks the base's dev windows backwards (calibration scale "
            f"{calibration.scale:.3g}): the feedback contradicts the base's training data; "
            "check its labels or lower --feedback-weight"
        )
    fitted = FittedHead(head, calibration, tuple(layers), {})
    pooled = [clip_scores(fitted, dev_set) for dev_set in dev_sets]
    threshold = choose_threshold(
        policy, np.concatenate([b for b, _ in pooled]), np.concatenate([s for _, s in pooled])
    )
    dev_channels = train_options.calibration_channels or train_options.channels
    dev_metrics = {
        channel: evaluate_set(fitted, dev_set, threshold_llr=threshold.llr).to_dict()
        for channel, dev_set in zip(dev_channels, dev_sets, strict=True)
    }
    lineage = {
        "base": identity.to_dict(),
        "ancestors": [identity.sha256, *((card.get("lineage") or {}).get("ancestors") or [])],
        "feedback": {
            "dir": str(Path(feedback_dir).resolve()),
            "count": len(train_fb),
            "windows": len(fb_y),
            "weight": options.feedback_weight,
            "by_label": dict(Counter(r.label for r in train_fb)),
            "train_ids": [r.id for r in train_fb],
            "holdout_fraction": options.holdout,
            "holdout_ids": [r.id for r in held_fb],
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": options.command,
    }
    training = {
        **(card.get("training") or {}),
        "manifests": manifests,
        "train_windows": int(rows.shape[0]),
        "feedback_windows": len(fb_y),
        "feedback_weight": options.feedback_weight,
    }
    version = next_version(card)
    card_extra: dict[str, Any] = {
        "name": options.name or card.get("name") or identity.name,
        "version": version,
        "created": lineage["created"],
        "spoofwatch_version": __version__,
        "training": training,
        "threshold": threshold.to_card(),
        "metrics": {"dev": dev_metrics},
        "lineage": lineage,
    }
    settings = replace(detector.settings, threshold=threshold.p_spoof, **_card_inference(card))
    spectral = card.get("spectral")
    save_detector(
        out,
        head=head,
        calibration=fitted.calibration,
        settings=settings,
        encoder_spec=EncoderSpec.from_dict(card["encoder"]["spec"]),
        encoder_identity=EncoderIdentity.from_dict(card["encoder"]["identity"]),
        card_extra=card_extra,
        spectral=None
        if spectral is None
        else (EncoderSpec.from_dict(spectral["spec"]), EncoderIdentity.from_dict(spectral["identity"])),
    )
    return {
        "out": str(out),
        "sha256": card_sha256(out),
        "version": version,
        "lineage": lineage,
        "threshold": threshold.to_card(),
        "dev": dev_metrics,
    }


def _card_inference(card: dict[str, Any]) -> dict[str, Any]:
    """The base card's own inference options (``load_detector`` reports the runtime's)."""
    section = card.get("inference") or {}
    keys = ("quantization", "backend", "num_threads", "max_batch")
    return {k: section[k] for k in keys if k in section}


def _base_features(
    detector: Detector,
    options: TrainOptions,
    train_items: Sequence[LabelledItem],
    dev_items: Sequence[LabelledItem],
    extra_items: Sequence[LabelledItem],
    retrain_options: RetrainOptions,
) -> tuple[list[EmbeddingSet], list[EmbeddingSet]]:
    """The base's training and dev windows, through the base's channels, as the base card's
    encoder (at its runtime) embeds them: from the cache where ``train`` left them."""
    rate = detector.sample_rate
    train_window = WindowConfig(rate, detector.settings.window_s, options.train_hop_s)
    dev_window = WindowConfig(rate, detector.settings.window_s, options.hop_s)

    def embed(
        items: Sequence[LabelledItem], window: WindowConfig, channels: Sequence[str]
    ) -> list[EmbeddingSet]:
        return [
            extract_with_spectral(
                items,
                detector.encoder,
                detector.spectral,
                window,
                channel=c,
                progress=retrain_options.progress,
                level_dbfs=detector.settings.level_dbfs,
            )
            for c in channels
        ]

    train_sets = embed(train_items, train_window, options.channels)
    if extra_items:
        extra_channels = options.channels if options.extra_channels is None else options.extra_channels
        train_sets += embed(extra_items, train_window, extra_channels)
    dev_sets = embed(dev_items, dev_window, options.calibration_channels or options.channels)
    return train_sets, dev_sets
