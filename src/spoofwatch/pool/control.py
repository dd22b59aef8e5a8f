"""``spoofwatch pool up|down|status``: deploy, remove and report the Ray Serve application.

Each call joins the Ray cluster at ``address`` (``auto``: the one this machine belongs to,
as ``ray start`` left it) as a short-lived driver. Serve runs without its HTTP proxy: ingest
nodes call the pool through deployment handles only.
"""

from __future__ import annotations

import logging
from typing import Any

from spoofwatch.errors import ConfigError, SpoofwatchError
from spoofwatch.pool.spec import APP_NAME, DEPLOYMENT_NAME, PoolSpec

logger = logging.getLogger(__name__)


class PoolError(SpoofwatchError):
    """The Ray cluster or the pool application is not there or not healthy."""


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (None or ``auto``: this machine's), once per process."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(
            address=address or "auto",
            namespace="spoofwatch",
            log_to_driver=False,
            logging_level=logging.WARNING,
            include_dashboard=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PoolError(
            f"cannot reach the Ray cluster at {address or 'auto'}: {exc}; expected a running cluster "
            "(`ray start --head`) and its address (host:port of the GCS)"
        ) from None


def pool_up(spec: PoolSpec, address: str | None) -> dict[str, Any]:
    """Deploy (or update in place) the pool and wait until its replicas run."""
    from ray import serve

    from spoofwatch.pool.deployment import build_app

    connect(address)
    check_gpus(spec, address)
    serve.start(proxy_location="Disabled")
    try:
        serve.run(build_app(spec), name=APP_NAME, route_prefix=None)
    except RuntimeError as exc:
        raise PoolError(f"the pool did not start: {exc}") from None
    return pool_status(address)


def check_gpus(spec: PoolSpec, address: str | None) -> None:
    """Refuse GPU replicas on a cluster without GPUs before deploying: Ray would otherwise
    keep them pending for ever, and ``pool up`` would wait on them."""
    if not spec.num_gpus:
        return
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
    if gpus < spec.num_gpus:
        raise PoolError(
            f"--num-gpus {spec.num_gpus:g}: the Ray cluster at {address or 'auto'} has {gpus:g} GPU(s); "
            "expected at least one replica's worth (start its nodes with `ray start --num-gpus N` "
            "on machines that have them), or --num-gpus 0 for CPU replicas"
        )


def pool_down(address: str | None) -> bool:
    """Remove the pool; False when there was none."""
    from ray import serve

    connect(address)
    if APP_NAME not in serve.status().applications:
        return False
    serve.delete(APP_NAME)
    return True


def pool_status(address: str | None) -> dict[str, Any]:
    """The application's state, its replicas by state, and the detector it holds."""
    from ray import serve

    connect(address)
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return {"app": APP_NAME, "status": "NOT_DEPLOYED"}
    report: dict[str, Any] = {"app": APP_NAME, "status": _name(app.status), "message": app.message}
    deployment = app.deployments.get(DEPLOYMENT_NAME)
    if deployment is not None:
        report["replicas"] = {_name(k): v for k, v in deployment.replica_states.items()}
    if report["status"] == "RUNNING":
        handle = serve.get_app_handle(APP_NAME)
        described = handle.describe.remote().result(timeout_s=30)
        report["detector"] = described["identity"]
        report["device"] = described.get("device", "cpu")
    return report


def _name(state: object) -> str:
    """A Serve status enum's value (some are plain strings already)."""
    return str(getattr(state, "value", state))


def spec_from_args(
    *,
    detector: str | None,
    replicas: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    **rest: Any,
) -> PoolSpec:
    """A PoolSpec from CLI values: ``replicas`` fixes the count; otherwise the bounds."""
    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        raise ConfigError("pool: expected --replicas or --min-replicas/--max-replicas, found both")
    if replicas is not None:
        low = high = replicas
    else:
        low = min_replicas if min_replicas is not None else 1
        high = max_replicas if max_replicas is not None else max(low, 1)
    values = {k: v for k, v in rest.items() if v is not None}
    return PoolSpec(detector=detector, min_replicas=low, max_replicas=high, **values)
