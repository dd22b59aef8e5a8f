"""Per-window level normalisation: every window reaches the encoders at one speech level.

Whisper's log-mel and LFCC statistics both carry the absolute level, and a head fitted on
this corpus learns it: the generated spoofs are peak-normalised and the demo pages have
their own levels. The unnormalised default detector's clip LLRs fell by 1 to 2 over a
35 dB gain sweep (louder looked more synthetic), so a loud genuine caller drew alarms. A
call's level says nothing about whether its voice is synthetic, so the detector should
not see it (README, Accuracy, and the corpus README's confound 4).

The level is the active one: the power of the 20 ms frames within ``ACTIVE_RANGE_DB`` of
the window's loudest frame, so pauses do not raise the gain. The gain is capped at
``MAX_GAIN_DB`` so near-silent windows are not amplified into noise, and digital silence
stays silent. Samples may exceed ±1 after the gain; the encoders take floats.
"""

from __future__ import annotations

import torch

from spoofwatch.errors import ModelError

FRAME_S = 0.02
ACTIVE_RANGE_DB = 40.0
MAX_GAIN_DB = 44.0  # a -70 dBFS window at most reaches -26
DEFAULT_TARGET_DBFS = -26.0  # ITU-T P.56's customary active speech level


def check_target(target_dbfs: float) -> float:
    """Return ``target_dbfs`` if it is a usable level (-60 to 0 dBFS), else raise ModelError."""
    if not -60.0 <= target_dbfs <= 0.0:
        raise ModelError(f"level target must be within -60..0 dBFS, found {target_dbfs}")
    return float(target_dbfs)


def active_level_gain(windows: torch.Tensor, sample_rate: int, target_dbfs: float) -> torch.Tensor:
    """(batch,) linear gains that bring each window's active level to ``target_dbfs``."""
    if windows.ndim != 2:
        raise ModelError(f"expected windows of shape (batch, samples), found {tuple(windows.shape)}")
    frame = max(1, round(FRAME_S * sample_rate))
    frames = windows.shape[1] // frame
    if frames == 0:
        raise ModelError(f"windows of {windows.shape[1]} samples are shorter than one {frame}-sample frame")
    power = windows[:, : frames * frame].float().reshape(len(windows), frames, frame).square().mean(dim=2)
    power_db = 10.0 * torch.log10(power + 1e-20)
    active = power_db >= power_db.amax(dim=1, keepdim=True) - ACTIVE_RANGE_DB
    active_power = (power * active).sum(dim=1) / active.sum(dim=1)
    level_db = 10.0 * torch.log10(active_power + 1e-20)
    gain_db = torch.clamp(target_dbfs - level_db, max=MAX_GAIN_DB)
    return torch.pow(10.0, gain_db / 20.0)


def normalise_level(windows: torch.Tensor, sample_rate: int, target_dbfs: float) -> torch.Tensor:
    """``windows`` scaled so each one's active level is ``target_dbfs`` (see module doc)."""
    gain = active_level_gain(windows, sample_rate, check_target(target_dbfs))
    return windows * gain.to(windows.dtype)[:, None]


def levelled_pair(
    windows: torch.Tensor, remakes: torch.Tensor | None, sample_rate: int, target_dbfs: float | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Windows and their remakes (if any) each brought to ``target_dbfs`` on their own;
    both unchanged for ``None``. Scoring and training call this one place, so they level
    the same way."""
    if target_dbfs is None:
        return windows, remakes
    levelled_remakes = None if remakes is None else normalise_level(remakes, sample_rate, target_dbfs)
    return normalise_level(windows, sample_rate, target_dbfs), levelled_remakes
