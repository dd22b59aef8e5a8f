"""What ``spoofwatch pool up`` deploys: replica bounds, resources and batching, checked
before Ray is touched. Pure Python, so the CLI and config validate without Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from spoofwatch.errors import ConfigError

APP_NAME: Final = "spoofwatch-pool"
DEPLOYMENT_NAME: Final = "SpoofwatchDetector"


@dataclass(frozen=True)
class PoolSpec:
    """``min_replicas`` .. ``max_replicas`` replicas (equal: a fixed number), each holding
    the detector on ``num_cpus`` CPUs (its torch threads) and ``num_gpus`` GPUs (a fraction
    shares one GPU between replicas; any GPU puts the encoder on it). A replica
    gathers requests for up to ``batch_wait_ms`` and scores up to ``max_batch`` windows per
    encoder call; Serve adds replicas while more than ``target_ongoing_requests`` requests
    wait per replica, and removes them when fewer do."""

    detector: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    target_ongoing_requests: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                "pool replicas: expected 1 <= min_replicas <= max_replicas, "
                f"found {self.min_replicas} and {self.max_replicas}"
            )
        checks = [
            ("num_cpus", math.isfinite(self.num_cpus) and self.num_cpus > 0, "a number > 0"),
            ("num_gpus", math.isfinite(self.num_gpus) and self.num_gpus >= 0, "a number >= 0"),
            ("max_batch", self.max_batch >= 1, "an integer >= 1"),
            ("batch_wait_ms", math.isfinite(self.batch_wait_ms) and self.batch_wait_ms >= 0, "ms >= 0"),
            (
                "target_ongoing_requests",
                math.isfinite(self.target_ongoing_requests) and self.target_ongoing_requests > 0,
                "a number > 0",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"pool {name}: expected {expected}, found {getattr(self, name)!r}")

    @property
    def device(self) -> str:
        """Where a replica runs the encoder: the GPU Ray gives it (Ray sets the replica's
        ``CUDA_VISIBLE_DEVICES``, so it is always ``cuda``), else the CPU."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    @property
    def torch_threads(self) -> int:
        return max(1, math.floor(self.num_cpus))

    @property
    def max_ongoing_requests(self) -> int:
        """Requests one replica accepts at once: enough to fill a batch while one is scored."""
        return max(4, 2 * self.max_batch)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of Ray Serve's ``Deployment.options``."""
        resources: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            resources["num_gpus"] = self.num_gpus
        options: dict[str, Any] = {
            "name": DEPLOYMENT_NAME,
            "ray_actor_options": resources,
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": 2.0,
            "health_check_timeout_s": 10.0,
            "graceful_shutdown_timeout_s": 5.0,
        }
        if self.min_replicas == self.max_replicas:
            options["num_replicas"] = self.min_replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": self.min_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": 5.0,
                "downscale_delay_s": 60.0,
            }
        return options
