"""The deployment files in ``deploy/``: the checked-in HAProxy configuration is what
``render.py`` writes and the real ``haproxy -c`` accepts it; the Kubernetes manifests
parse and keep the drain's invariants (they are documented, not run here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from typing import Any

import pytest
import yaml
from cluster_kit import HAPROXY, ROOT, render

from spoofwatch.cli import build_parser

K8S = ROOT / "deploy" / "k8s"
ENV_NODES = [f"${{NODE{i}_HOST}}:${{NODE{i}_WS_PORT}}:${{NODE{i}_AUDIOSOCKET_PORT}}" for i in (1, 2)]


def test_checked_in_haproxy_cfg_is_the_rendered_two_node_config_and_haproxy_accepts_it() -> None:
    checked_in = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    assert checked_in == render.render([render.parse_node(n) for n in ENV_NODES])
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    env = {**os.environ, "SPOOFWATCH_SERVER_TOKEN": "t0k"}
    for i, port in ((1, 18001), (2, 18002)):
        env |= {
            f"NODE{i}_HOST": "127.0.0.1",
            f"NODE{i}_WS_PORT": str(port),
            f"NODE{i}_AUDIOSOCKET_PORT": "9092",
        }
    config = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "option httpchk" in checked_in and "http-check expect status 200" in checked_in
    assert "timeout tunnel" in checked_in and "mode tcp" in checked_in


def test_render_refuses_a_bad_node() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:WS_PORT"):
        render.parse_node("no-port")
    with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:WS_PORT"):
        render.parse_node("host:http")
    with pytest.raises(ValueError, match="at least one node"):
        render.render([])


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def test_ingest_manifest_drains_within_its_grace_period_and_uses_real_serve_flags() -> None:
    deployment = next(d for d in load("ingest.yaml") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "serve"
    flags = dict(a.removeprefix("--").partition("=")[::2] for a in args[1:])
    assert float(flags["drain-timeout"]) < pod["terminationGracePeriodSeconds"]
    assert "cluster-view" in flags and flags["mqtt"].startswith("mqtt://")
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in container["livenessProbe"]  # a draining node (503) is alive
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    known = {s.removeprefix("--") for action in serve._actions for s in action.option_strings}
    if importlib.util.find_spec("spoofwatch.pool") is None:  # until the Ray pool (issue 30 part 2) lands
        known |= {"scorer", "ray-address"}
    assert set(flags) <= known, sorted(set(flags) - known)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (flags["port"], flags["audiosocket-port"]) == (str(ports["ws"]), str(ports["audiosocket"]))


def test_every_manifest_parses_and_names_its_kinds() -> None:
    kinds = {name.name: [d["kind"] for d in load(name.name)] for name in sorted(K8S.glob("*.yaml"))}
    assert kinds == {
        "ingest.yaml": ["Deployment", "Service", "Service", "PodDisruptionBudget"],
        "ingress.yaml": ["Ingress"],
        "mosquitto.yaml": ["ConfigMap", "Deployment", "Service"],
        "rayservice-pool.yaml": ["RayService"],
    }
    (service,) = load("rayservice-pool.yaml")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    assert app["name"] == "spoofwatch-pool" and app["import_path"].startswith("spoofwatch.pool.")


def test_the_rayservice_app_args_build_the_pool_spec_its_import_path_takes() -> None:
    pytest.importorskip("ray")
    from spoofwatch.errors import ModelError
    from spoofwatch.pool.deployment import pool_spec_from_args
    from spoofwatch.pool.spec import PoolSpec

    (service,) = load("rayservice-pool.yaml")
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    module, _, name = app["import_path"].partition(":")
    assert (module, name) == ("spoofwatch.pool.deployment", "build_app")
    spec = pool_spec_from_args(app["args"])
    assert spec == PoolSpec(max_batch=32, batch_wait_ms=5)
    with pytest.raises(ModelError, match=r"unknown \['replicas'\]"):
        pool_spec_from_args({"replicas": 2})
