"""Calibration of raw head scores to log-likelihood ratios (natural log, bona fide vs spoof).

An affine map fitted by prior-weighted logistic regression (equal effective priors), the
standard score calibration in speaker and spoofing detection (Brümmer's FoCal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from spoofwatch.errors import ModelError


@dataclass(frozen=True)
class AffineCalibration:
    """``llr = scale * raw + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, raw: NDArray[np.floating]) -> NDArray[np.float64]:
        return self.scale * np.asarray(raw, dtype=np.float64) + self.offset

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "affine", "scale": self.scale, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AffineCalibration:
        if data.get("kind", "affine") != "affine":
            raise ModelError(f"expected an 'affine' calibration, found {data.get('kind')!r}")
        return cls(scale=float(data["scale"]), offset=float(data["offset"]))

    @classmethod
    def fit(cls, raw_bonafide: NDArray[np.floating], raw_spoof: NDArray[np.floating]) -> AffineCalibration:
        """Fit on held-out raw scores so that outputs are LLRs at equal priors."""
        bona = np.asarray(raw_bonafide, dtype=np.float64).ravel()
        spoof = np.asarray(raw_spoof, dtype=np.float64).ravel()
        if len(bona) == 0 or len(spoof) == 0:
            raise ModelError(
                f"calibration needs both classes; found {len(bona)} bona fide, {len(spoof)} spoof"
            )
        x = np.concatenate([bona, spoof])[:, None]
        y = np.concatenate([np.ones(len(bona)), np.zeros(len(spoof))])
        # Balanced weights make the fitted logit an LLR (the prior log-odds term is zero).
        model = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000)
        model.fit(x, y)
        return cls(scale=float(model.coef_[0, 0]), offset=float(model.intercept_[0]))
