"""``spoofwatch pool up|down|status``: argument parsing and printing (Ray is imported only
when the command runs)."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO


def add_pool_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pool", help="deploy, remove or report the inference pool (Ray Serve) that ingest nodes score on"
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster, host:port of its GCS (default: auto)"
    )
    parser.add_argument("--detector", metavar="DIR", help="detector directory or packaged name (default)")
    parser.add_argument("--replicas", type=int, metavar="N", help="a fixed number of replicas (default 1)")
    parser.add_argument("--min-replicas", type=int, metavar="N", help="autoscaling: fewest replicas")
    parser.add_argument("--max-replicas", type=int, metavar="N", help="autoscaling: most replicas")
    parser.add_argument(
        "--target-ongoing-requests",
        type=float,
        metavar="Q",
        help="autoscaling: batches waiting per replica that Serve aims at (default 2)",
    )
    parser.add_argument("--num-cpus", type=float, metavar="C", help="CPUs per replica, its torch threads (1)")
    parser.add_argument("--num-gpus", type=float, metavar="G", help="GPUs per replica (default 0)")
    parser.add_argument("--max-batch", type=int, metavar="B", help="most windows per encoder call (32)")
    parser.add_argument(
        "--batch-wait-ms", type=float, metavar="MS", help="longest wait to fill a batch on a replica (5)"
    )
    return parser


def cmd_pool(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.pool.control import pool_down, pool_status, pool_up, spec_from_args

    address = args.ray_address
    if args.action == "up":
        spec = spec_from_args(
            detector=args.detector,
            replicas=args.replicas,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            target_ongoing_requests=args.target_ongoing_requests,
        )
        print(json.dumps(pool_up(spec, address)), file=out)
    elif args.action == "down":
        removed = pool_down(address)
        print(json.dumps({"removed": removed}), file=out)
    else:
        report = pool_status(address)
        print(json.dumps(report), file=out)
        return 0 if report["status"] == "RUNNING" else 1
    return 0
