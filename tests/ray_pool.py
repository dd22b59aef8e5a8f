"""A local Ray cluster with the inference pool deployed, for tests (``ray_pool``).

``ray_pool(replicas=2)`` starts a Ray cluster inside this process (``ray.init``, 2 CPUs,
no dashboard), deploys the pool through ``spoofwatch pool up`` and yields a ``RayPool``:
``address`` is the cluster's GCS address for ``spoofwatch serve --scorer ray
--ray-address ADDR`` in subprocesses (``env`` carries this checkout's PYTHONPATH to them),
``kill_replica()`` kills one replica actor. The cluster is shut down at the end.

Use it module-scoped: starting Ray and loading the detector in each replica takes about
a minute on a 2-core machine.

    @pytest.fixture(scope="module")
    def pool() -> Iterator[RayPool]:
        with ray_pool(replicas=2) as running:
            yield running
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
REPLICA_PREFIX = "SERVE_REPLICA::spoofwatch-pool#"


@dataclass
class RayPool:
    address: str
    env: dict[str, str]
    killed: list[str] = field(default_factory=list)

    def replicas(self) -> list[str]:
        import ray

        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        return sorted(n for n in names if n.startswith(REPLICA_PREFIX))

    def kill_replica(self) -> str:
        """Kill one live replica actor (Serve starts a new one in its place)."""
        import ray

        alive = [n for n in self.replicas() if n not in self.killed]
        if not alive:
            raise RuntimeError("ray_pool: expected a live replica to kill, found none")
        name = alive[0]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        self.killed.append(name)
        return name

    def cli(self, *args: str) -> tuple[int, dict[str, Any]]:
        """``spoofwatch pool ARGS --ray-address ADDR`` in this process: exit status, JSON."""
        from spoofwatch.cli import main

        out = io.StringIO()
        status = main(["pool", *args, "--ray-address", self.address], out=out)
        return status, json.loads(out.getvalue().strip().splitlines()[-1])


@contextlib.contextmanager
def ray_pool(replicas: int = 2, num_cpus: int = 2) -> Iterator[RayPool]:
    ray = pytest.importorskip("ray")
    # Ray's workers are started by the raylet, which inherits this environment: they must
    # import this checkout's spoofwatch, not another installed one.
    before = os.environ.get("PYTHONPATH")
    pythonpath = os.pathsep.join(p for p in (SRC, before) if p)
    os.environ["PYTHONPATH"] = pythonpath
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        namespace="spoofwatch",
    )
    try:
        address = ray.get_runtime_context().gcs_address
        pool = RayPool(address=address, env={**os.environ, "PYTHONPATH": pythonpath})
        status, report = pool.cli("up", "--replicas", str(replicas), "--num-cpus", "1")
        if status != 0 or report.get("status") != "RUNNING":
            raise RuntimeError(f"ray_pool: the pool did not start: {report}")
        yield pool
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before
        sys.stderr.flush()
