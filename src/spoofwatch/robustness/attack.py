"""White-box attack: projected gradient descent on the waveform through the frozen encoder,
the spectral front end, the head and the calibration, pushing a spoof window's LLR up
(towards "bona fide") within an L2 budget stated as an SNR (signal power over
perturbation power).

The gradient needs the float path: ``load_detector(card, quantization="none")`` gives the
same card with float32 encoder layers (dynamic int8 ``Linear`` layers have no gradient).
The attacked windows are then also scored by the card as deployed (int8 where the card
says so) to show whether the attack transfers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.errors import ModelError
from spoofwatch.model.detector import Detector
from spoofwatch.model.level import normalise_level
from spoofwatch.model.pooling import mean_std_pool, stored_precision_torch
from spoofwatch.model.quantize import quantization_of

DEFAULT_STEPS = 4
# Spectral front ends whose block is their pooled states, computed in torch.
DIFFERENTIABLE_FRONT_ENDS = ("lfcc", "lfcc-phase")


def check_differentiable(detector: Detector) -> None:
    """Refuse a detector whose scores have no gradient with respect to the waveform."""
    mode = quantization_of(detector.encoder.identity)
    if mode != "none":
        raise ModelError(
            f"the attack needs the float path: this detector's encoder runs {mode} (no gradient); "
            "load the same card with quantization='none'"
        )
    if detector.settings.backend != "torch":
        raise ModelError(f"the attack needs the torch backend, found {detector.settings.backend}")
    if detector.spectral is not None and detector.spectral.identity.kind not in DIFFERENTIABLE_FRONT_ENDS:
        raise ModelError(
            f"the attack runs through {', '.join(DIFFERENTIABLE_FRONT_ENDS)} spectral front ends, "
            f"not {detector.spectral.identity.kind} (it calls a vocoder)"
        )


def differentiable_llr(detector: Detector, windows: torch.Tensor) -> torch.Tensor:
    """(batch,) calibrated LLRs of ``windows`` with gradients, as ``Detector.score_windows``
    computes them."""
    chunk = windows
    if detector.settings.level_dbfs is not None:
        chunk = normalise_level(windows, detector.sample_rate, detector.settings.level_dbfs)
    states = detector.encoder.hidden_states(chunk)
    pooled = stored_precision_torch(mean_std_pool(states, detector.settings.layers))
    if detector.spectral is not None:
        spectral_states = detector.spectral.hidden_states(chunk)
        every = stored_precision_torch(mean_std_pool(spectral_states, range(len(spectral_states))))
        pooled = torch.cat([pooled, every], dim=1)
    raw = detector.head.differentiable(pooled)
    return detector.calibration.scale * raw + detector.calibration.offset


@dataclass(frozen=True)
class Attacked:
    window: NDArray[np.float32]
    llr_before: float
    llr_after: float
    snr_db: float


def pgd(
    detector: Detector,
    window: NDArray[np.float32],
    snr_db: float,
    steps: int = DEFAULT_STEPS,
    stop_above: float | None = None,
) -> Attacked:
    """L2 PGD on one window: at most ``steps`` normalised-gradient steps of 2.5 * eps / steps,
    each projected back into the ball of radius eps = ||x|| * 10^(-snr/20) (and into
    [-1, 1]); with ``stop_above``, stops once the LLR exceeds it (the spoof passes with a
    margin: enough to count a pass, at a fraction of the cost)."""
    check_differentiable(detector)
    x = torch.from_numpy(np.ascontiguousarray(window, np.float32))[None, :]
    eps = float(torch.linalg.vector_norm(x)) * 10 ** (-snr_db / 20)
    alpha = 2.5 * eps / max(steps, 1)
    delta = torch.zeros_like(x)
    with torch.no_grad():
        before = float(differentiable_llr(detector, x)[0])
    best_delta, best = delta.clone(), before
    for _ in range(steps):
        if stop_above is not None and best > stop_above:
            break
        delta.requires_grad_(True)
        llr = differentiable_llr(detector, x + delta)[0]
        (grad,) = torch.autograd.grad(llr, delta)
        with torch.no_grad():
            if float(llr) > best:
                best, best_delta = float(llr), delta.detach().clone()
            norm = float(torch.linalg.vector_norm(grad))
            if norm == 0.0 or not math.isfinite(norm):
                break
            delta = delta.detach() + alpha * grad / norm
            size = float(torch.linalg.vector_norm(delta))
            if size > eps:
                delta = delta * (eps / size)
            delta = torch.clamp(x + delta, -1.0, 1.0) - x
    with torch.no_grad():
        final = float(differentiable_llr(detector, x + delta)[0])
        if final > best:
            best, best_delta = final, delta
    adversarial = (x + best_delta)[0].numpy().astype(np.float32)
    noise = adversarial.astype(np.float64) - window
    snr = 10 * math.log10(float(np.sum(window.astype(np.float64) ** 2)) / max(float(np.sum(noise**2)), 1e-30))
    return Attacked(adversarial, before, best, snr)
