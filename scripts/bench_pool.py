"""``spoofwatch bench`` against an inference pool on a Ray cluster that this script starts
and stops (in-process, ``ray.init``; ``--num-cpus`` CPUs), for measuring the remote hop
on one machine without leaving Ray running:

    python scripts/bench_pool.py --num-cpus 2 -- --compare-scorers --pool-replicas 1,2

Arguments after ``--`` go to ``spoofwatch bench`` (``--ray-address`` is added).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the Ray cluster")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- then spoofwatch bench arguments")
    args = parser.parse_args(argv)
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    import ray

    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        from spoofwatch.cli import main as spoofwatch

        address = ray.get_runtime_context().gcs_address
        return spoofwatch(["bench", *bench, "--ray-address", address])
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
