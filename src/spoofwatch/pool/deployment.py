"""The Ray Serve deployment: one replica holds one detector, loaded from its card as
``spoofwatch serve`` loads it, and scores the window batches that ingest nodes send.

``@serve.batch`` gathers the requests that arrive within ``batch_wait_ms`` (each already a
batch of up to the ingest node's ``max_batch`` windows) into one encoder call of up to the
pool's ``max_batch`` windows per forward pass. Every result carries the detector card's
identity and version and the replica that scored it. Imported only where Ray is.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ray import serve

from spoofwatch.errors import ModelError
from spoofwatch.pool.identity import card_identity
from spoofwatch.pool.spec import PoolSpec


class DetectorReplica:
    """A Serve replica: the detector, and batched scoring."""

    def __init__(self, spec: PoolSpec) -> None:
        from spoofwatch.model.artifact import load_detector

        self.detector = load_detector(
            spec.detector, num_threads=spec.torch_threads, max_batch=spec.max_batch, device=spec.device
        )
        if self.detector.stream_context() is not None:
            raise ModelError(
                f"detector {self.detector.card.get('name')!r} reads each window's streamed remake beside "
                "it, made from the stream's own audio on the ingest node; the pool scores windows alone, "
                "expected a detector without a streamed-remake front end (e.g. default)"
            )
        self.identity = card_identity(self.detector.card, self.detector.encoder.identity.name)
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        batched: Any = self.score_batch  # serve.batch's wrapper; its setters are untyped
        batched.set_max_batch_size(spec.max_batch)
        batched.set_batch_wait_timeout_s(spec.batch_wait_ms / 1000.0)

    def describe(self) -> dict[str, Any]:
        """What an ingest node checks before it sends windows: geometry and identity."""
        return {
            "identity": self.identity,
            "sample_rate": self.detector.sample_rate,
            "window_samples": self.detector.window_samples,
            "threshold": self.detector.threshold,
            "window_s": self.detector.settings.window_s,
            "hop_s": self.detector.settings.hop_s,
            "card": self.detector.card,
            "replica": self.replica,
            "device": self.detector.settings.device,
        }

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score_batch(self, requests: list[NDArray[np.float32]]) -> list[dict[str, Any]]:
        sizes = [len(r) for r in requests]
        windows = np.concatenate(requests) if len(requests) > 1 else requests[0]
        # The encoder runs off the replica's event loop, so requests keep queueing (and
        # health checks keep answering) while a batch is scored.
        scores = await asyncio.to_thread(self.detector.score_windows, windows)
        out: list[dict[str, Any]] = []
        start = 0
        for size in sizes:
            out.append(
                {
                    "scores": scores[start : start + size],
                    "identity": self.identity,
                    "replica": self.replica,
                    "batch_windows": len(windows),
                }
            )
            start += size
        return out

    async def score(self, windows: NDArray[np.float32]) -> dict[str, Any]:
        """(n, window_samples) windows → ``scores`` (calibrated LLR), ``identity``, ``replica``."""
        result: dict[str, Any] = await self.score_batch(windows)
        return result


def build_app(spec: PoolSpec | dict[str, Any]) -> Any:
    """The Serve application ``spoofwatch pool up`` runs. A config file's ``import_path``
    (KubeRay's RayService, ``serve deploy``) calls it with its ``args`` as a dict of
    ``PoolSpec`` fields instead."""
    if isinstance(spec, dict):
        spec = pool_spec_from_args(spec)
    deployment = serve.deployment(DetectorReplica).options(**spec.deployment_options())  # type: ignore[attr-defined]
    return deployment.bind(spec)


def pool_spec_from_args(args: dict[str, Any]) -> PoolSpec:
    """A Serve config's ``args`` as a ``PoolSpec``, unknown keys refused by name."""
    fields = set(PoolSpec.__dataclass_fields__)
    unknown = sorted(set(args) - fields)
    if unknown:
        raise ModelError(f"pool app args: unknown {unknown}; expected some of {sorted(fields)}")
    return PoolSpec(**args)
