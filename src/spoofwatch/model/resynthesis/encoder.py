"""``lfcc-phase-resynth``: the ``lfcc-phase`` front end plus what a vocoder cannot remake.

The idea is DIRE's (Wang et al., ICCV 2023, for images): a generator's output is close to
what a generator can remake, a microphone's is not. Every (levelled) window is analysed
and resynthesised by FARGAN (``model.resynthesis.vocoder``, no pitch move) and both the window and its
remake go through the ``lfcc-phase`` front end: two hidden states, original then remake.
The head reads the original's pooled block and the residual (original minus remake) of its
phase-coherence statistics (``resynthesis_block``). Leave-one-source-out validation chose
the phase residual alone over the whole spectral residual or the remake's own block
(README, Accuracy; research/resynthesis_residual.py).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from spoofwatch.errors import ConfigError, ModelError
from spoofwatch.model.encoders.base import EncoderIdentity, TorchEncoder, check_windows
from spoofwatch.model.encoders.lfcc import N_CEPS
from spoofwatch.model.encoders.phase import PHASE_BANDS, LfccPhaseEncoder
from spoofwatch.model.resynthesis.vocoder import FARGAN_RECIPE, find_vocoder, vocode

KIND = "lfcc-phase-resynth"
VERSION = 1
WIDTH = 3 * N_CEPS + PHASE_BANDS  # one lfcc-phase frame
# Within one state's pooled block (mean of the WIDTH values, then their std): the
# phase-coherence bands' mean and std.
PHASE_COLUMNS = np.r_[3 * N_CEPS : WIDTH, WIDTH + 3 * N_CEPS : 2 * WIDTH]
BLOCK_WIDTH = 2 * WIDTH + len(PHASE_COLUMNS)


def remake_pair_identity(kind: str, inner: LfccPhaseEncoder, recipe: str) -> EncoderIdentity:
    """Identity of a front end whose two states are ``inner``'s frames of a window and of
    its remake made by ``recipe`` (the remake's recipe, not the vocoder program's bytes)."""
    digest = hashlib.sha256(f"{inner.identity.weights_sha256}+{recipe}-phase-residual".encode()).hexdigest()
    return EncoderIdentity(
        kind=kind,
        name=kind,
        weights_sha256=digest,
        sample_rate=inner.identity.sample_rate,
        num_hidden_states=2,
        hidden_size=WIDTH,
    )


def resynthesis_block(pooled: NDArray[np.float32]) -> NDArray[np.float32]:
    """(windows, 2 * 2 * WIDTH) pooled states, original then remake, to the head's block:
    the original's pooled state, then (original - remake) on PHASE_COLUMNS."""
    if pooled.ndim != 2 or pooled.shape[1] != 4 * WIDTH:
        raise ModelError(
            f"{KIND}: expected pooled states of shape (windows, {4 * WIDTH}), found {pooled.shape}"
        )
    original, remade = pooled[:, : 2 * WIDTH], pooled[:, 2 * WIDTH :]
    residual = original[:, PHASE_COLUMNS] - remade[:, PHASE_COLUMNS]
    return np.concatenate([original, residual], axis=1).astype(np.float32, copy=False)


class LfccPhaseResynthesisEncoder(TorchEncoder):
    """Two hidden states of width 80 per frame: the ``lfcc-phase`` frames of each window and
    of its FARGAN remake. ``vocoder``: the FARGAN program (default: ``find_vocoder``)."""

    def __init__(self, window_s: float = 4.0, vocoder: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.inner = LfccPhaseEncoder(window_s)  # also checks window_s
        try:
            self.vocoder: Path = find_vocoder(vocoder)
        except ConfigError as exc:
            raise ModelError(
                f"the {KIND} spectral front end remakes every window with FARGAN: {exc}"
            ) from None
        self._window_samples = self.inner.window_samples
        self._identity = remake_pair_identity(KIND, self.inner, f"resynth-v{VERSION}-{FARGAN_RECIPE}")

    def remake(self, window: NDArray[np.float32]) -> NDArray[np.float32]:
        """FARGAN's resynthesis of one window, at its length (the vocoder's output is a few
        frames short; the end is mirrored back)."""
        y = vocode(window, self.vocoder)[: len(window)]
        return np.pad(y, (0, len(window) - len(y)), mode="reflect")

    def hidden_states(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        check_windows(windows, self._window_samples)
        batch = windows.float().numpy()
        # Threads suffice: the work happens in the vocoder's processes.
        with ThreadPoolExecutor(max(1, min(len(batch), os.cpu_count() or 1))) as pool:
            remade = np.stack(list(pool.map(self.remake, batch)))
        (original,) = self.inner.hidden_states(windows)
        (resynthesis,) = self.inner.hidden_states(torch.from_numpy(remade))
        return (original, resynthesis)
