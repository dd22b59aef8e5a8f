"""Command-line front end (``spoofwatch`` and ``python -m spoofwatch``).

Only this module parses arguments and prints; it turns them into config dataclasses and
calls library code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from spoofwatch import __version__
from spoofwatch.errors import ConfigError, DataError, SpoofwatchError
from spoofwatch.learning.commands import LEARNING_COMMANDS, add_learning_parsers
from spoofwatch.model.runtime_modes import BACKENDS, QUANTIZATION_MODES
from spoofwatch.robustness.command import add_robustness_parser, cmd_robustness
from spoofwatch.train.cache_command import add_cache_parser, cmd_cache

if TYPE_CHECKING:
    from spoofwatch.config import EngineConfig
    from spoofwatch.model.scorer import WindowScorer
    from spoofwatch.ops.bench import BenchReport
    from spoofwatch.ops.soak import SoakReport

# train.channel.CHANNELS, spelled out so --help does not import numpy and the resampler.
_CHANNEL_NAMES = (
    "clean | telephone | level | telephone-level | augmented | augmented-gaps | telephone-gaps"
    " | telephone-sid-gaps | voip"
)
# train.pipeline.SPECTRAL_FRONT_ENDS, for the same reason.
_SPECTRAL_FRONT_ENDS = ("lfcc", "lfcc-phase", "lfcc-phase-resynth", "lfcc-phase-resynth-streamed")

logger = logging.getLogger("spoofwatch")
_SUBPARSERS: dict[str, argparse.ArgumentParser] = {}  # filled by build_parser
# The optional packages, by the pyproject extra that installs them.
_EXTRA_OF = {
    "websockets": "serve",
    "aiohttp": "serve",
    "sounddevice": "mic",
    "aiomqtt": "mqtt",
    "matplotlib": "train",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "ray": "pool",
    "sipmessage": "siprec",
}


def _add_detector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detector",
        metavar="DIR",
        help="detector directory, or a packaged one by name: default, resynth (more accurate, remakes"
        " every window with FARGAN, half the streams per core) (default: $SPOOFWATCH_DETECTOR or default)",
    )


def _add_weighting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source-cap",
        type=int,
        default=None,
        metavar="N",
        help="no source (the manifest's source column) weighs more than N clips in the fit: a few "
        "large sources cannot teach the head their recording style as the class (default: every "
        "clip weighs 1)",
    )
    parser.add_argument(
        "--balance-by",
        default="",
        metavar="KEYS",
        help="comma-separated manifest columns (e.g. lang), or 'length' (clips shorter than a "
        "window against the rest): bona fide and spoof weigh the same within each stratum of "
        "their values, so a stratum that is mostly one class does not teach the head itself as "
        "the class (default: the two classes balanced overall)",
    )


def _add_head_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--head",
        choices=("linear", "mlp"),
        default="linear",
        help="the head over the pooled features: linear (logistic regression, --C) or mlp (one "
        "hidden layer, the --mlp-* options) (default: linear)",
    )
    parser.add_argument(
        "--mlp-hidden", type=int, default=256, metavar="N", help="MLP hidden units (default 256)"
    )
    parser.add_argument(
        "--mlp-epochs", type=int, default=4, metavar="N", help="MLP training epochs (default 4)"
    )
    parser.add_argument(
        "--mlp-dropout",
        type=float,
        default=0.5,
        metavar="P",
        help="dropout on the MLP's hidden layer (default 0.5)",
    )
    parser.add_argument(
        "--mlp-input-dropout",
        type=float,
        default=0.2,
        metavar="P",
        help="dropout on the MLP's input (default 0.2)",
    )
    parser.add_argument(
        "--mlp-weight-decay", type=float, default=1e-3, metavar="W", help="AdamW weight decay (default 0.001)"
    )
    parser.add_argument(
        "--mlp-learning-rate",
        type=float,
        default=1e-3,
        metavar="LR",
        help="peak one-cycle learning rate (default 0.001)",
    )
    parser.add_argument(
        "--mlp-seed", type=int, default=0, metavar="N", help="MLP initialisation and shuffling seed"
    )


def _add_dataset(
    parser: argparse.ArgumentParser, prefix: str = "", required: bool = True, repeatable: bool = False
) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    if repeatable:
        group.add_argument(
            f"--{prefix}manifest",
            metavar="CSV",
            action="append",
            help="manifest CSV with path and label columns (repeatable: the manifests' rows are pooled,"
            " e.g. the development corpus and a built one; a utt_id in two of them is refused)",
        )
    else:
        group.add_argument(
            f"--{prefix}manifest", metavar="CSV", help="manifest CSV with path and label columns"
        )
    group.add_argument(f"--{prefix}protocol", metavar="FILE", help="ASVspoof 2019 protocol file")
    parser.add_argument(f"--{prefix}audio-dir", metavar="DIR", help="audio folder for --protocol")
    parser.add_argument(f"--{prefix}ext", default=".flac", help="audio file extension for --protocol")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spoofwatch", description="Real-time synthetic speech detector.")
    parser.add_argument("--version", action="version", version=f"spoofwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score audio files window by window")
    score.add_argument("files", nargs="+", metavar="FILE")
    _add_detector(score)
    score.add_argument("--json", action="store_true", help="one JSON object per file per line")
    _add_device_option(score)

    ev = sub.add_parser("eval", help="score a labelled list and print metrics")
    _add_dataset(ev)
    _add_detector(ev)
    ev.add_argument("--split", help="only items of this split (manifest column)")
    ev.add_argument("--channel", default="clean", help="channel applied before scoring: " + _CHANNEL_NAMES)
    ev.add_argument("--out", metavar="DIR", help="write scores.csv, metrics.json and plots here")
    ev.add_argument(
        "--window-lengths",
        default="1,2,3,4",
        metavar="S,S,...",
        help="with --out: also report EER of the head on windows of these lengths in seconds "
        "('' to skip; each length re-extracts the list)",
    )
    ev.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")

    tr = sub.add_parser("train", help="extract embeddings, fit and calibrate a detector")
    _SUBPARSERS["train"] = tr
    tr.add_argument(
        "--recipe",
        metavar="NAME|FILE",
        help="take the defaults of the options below from a recipe: a packaged detector's"
        " (default, resynth: model/NAME/recipe.toml) or a TOML file with a [train] table",
    )
    _add_dataset(tr, repeatable=True)
    _add_dataset(tr, prefix="dev-", required=False, repeatable=True)
    tr.add_argument("--out", required=True, metavar="DIR", help="detector directory to write")
    tr.add_argument(
        "--encoder", default="whisper-base", help="whisper-base | whisper-tiny.en | hf:PATH_OR_ID"
    )
    tr.add_argument("--window-s", type=float, default=4.0)
    tr.add_argument("--hop-s", type=float, default=1.0, help="hop used when streaming")
    tr.add_argument("--train-hop-s", type=float, default=2.0, help="hop between training windows")
    tr.add_argument(
        "--channels", default="clean,telephone", help="channels applied to both classes: " + _CHANNEL_NAMES
    )
    tr.add_argument(
        "--calibration-channels",
        metavar="CHANNELS",
        help="channels of the dev windows that calibrate the head, set the threshold and are "
        "reported (default: --channels)",
    )
    tr.add_argument(
        "--extra-channels",
        metavar="CHANNELS",
        help="channels the --extra-manifest items go through (default: --channels)",
    )
    tr.add_argument(
        "--extra-manifest",
        action="append",
        default=[],
        metavar="CSV",
        help="training-only items, e.g. vocoder copies from `spoofwatch copysynth` (repeatable); "
        "rows of split dev are left out, and none is scored on dev",
    )
    tr.add_argument("--layers", help="comma-separated hidden states (default: chosen on dev)")
    tr.add_argument("--C", type=float, default=0.01, help="inverse L2 strength of the logistic head")
    tr.add_argument("--name", default="spoofwatch-detector", help="detector name in the model card")
    tr.add_argument(
        "--threshold",
        default="bayes",
        metavar="POLICY",
        help="decision threshold chosen on dev clips: bayes (p_spoof 0.5), eer, or false-alarm:RATE "
        "(at most RATE of bona fide dev clips flagged, e.g. false-alarm:0.01)",
    )
    tr.add_argument(
        "--train-min-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="leave the manifests' training clips shorter than this out (not --extra-manifest's "
        "copies): a head learns a window that repeats a short clip as the class most short clips "
        "have (default 0: every clip)",
    )
    tr.add_argument(
        "--dev-min-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="leave dev clips shorter than this out of calibration, the threshold and the dev "
        "figures: streaming scores whole windows, a clip shorter than one is scored on a window "
        "repeating it (e.g. the window length; default 0: every dev clip)",
    )
    tr.add_argument(
        "--truncate-encoder",
        action="store_true",
        help="run only the Whisper layers the head reads (same scores, less compute)",
    )
    _add_runtime_options(tr)
    tr.add_argument(
        "--spectral",
        choices=("none", *_SPECTRAL_FRONT_ENDS),
        default="none",
        help="fuse a spectral front end into the same linear head: LFCC mean+std, LFCC and"
        " per-band phase coherence (lfcc-phase), or that plus the phase residual against a FARGAN"
        " remake of each window (lfcc-phase-resynth) or of each stream, every second vocoded once"
        " (lfcc-phase-resynth-streamed); the last two need scripts/build_fargan.sh",
    )
    tr.add_argument(
        "--spectral-weight",
        type=float,
        default=2.0,
        help="weight of the spectral block's standardised features in the fit (L2 penalty / w^2)",
    )
    _add_weighting_options(tr)
    _add_head_options(tr)
    tr.add_argument(
        "--fit-precision",
        choices=("float64", "float32"),
        default="float64",
        help="precision of the standardised training matrix: float32 halves the fit's memory on a "
        "large corpus (coefficients differ slightly)",
    )
    _add_level_option(tr)
    tr.add_argument("--json", action="store_true", help="last line of stdout is the dev metrics JSON")
    lo = sub.add_parser(
        "loso",
        help="leave-one-source-out (or, with --fold-by, leave-one-family-out) validation: pooled EER "
        "over held-out folds",
    )
    _add_dataset(lo, repeatable=True)
    lo.add_argument(
        "--split",
        metavar="SPLITS",
        help="keep only rows whose split column is one of these (comma-separated, e.g. train), "
        "in every manifest (default: all rows)",
    )
    lo.add_argument(
        "--fold-by",
        default="source",
        metavar="COLUMN",
        help="column whose cells are held out in turn: source (default; both classes together, "
        "leave-one-source-out) or any other, e.g. family or generator: then each spoof value is "
        "held out in turn, and bona fide clips separately by --bonafide-fold-by (leave-one-family-out)",
    )
    lo.add_argument(
        "--bonafide-fold-by",
        default="source",
        metavar="COLUMN",
        help="with --fold-by other than source: the column the bona fide clips are held out by "
        "(default source, without its @version)",
    )
    _add_weighting_options(lo)
    _add_head_options(lo)
    lo.add_argument(
        "--fit-precision",
        choices=("float64", "float32"),
        default="float64",
        help="precision of each fold's standardised training matrix: float32 halves the fit's "
        "memory on a large corpus (coefficients differ slightly)",
    )
    lo.add_argument(
        "--encoder", default="whisper-base", help="whisper-base | whisper-tiny.en | hf:PATH_OR_ID"
    )
    lo.add_argument("--window-s", type=float, default=4.0)
    lo.add_argument("--hop-s", type=float, default=2.0, help="hop between windows")
    lo.add_argument("--train-channels", default="clean,telephone", help="channels of the training folds")
    lo.add_argument(
        "--test-channel",
        default="clean",
        help="channel(s) of the held-out clips, comma-separated (each fold's head scores every one): "
        + _CHANNEL_NAMES,
    )
    lo.add_argument(
        "--extra-channels",
        metavar="CHANNELS",
        help="channels the --extra-manifest items go through (default: --train-channels)",
    )
    lo.add_argument(
        "--extra-manifest",
        action="append",
        default=[],
        metavar="CSV",
        help="training-only items, e.g. vocoder copies from `spoofwatch copysynth` (repeatable); "
        "each fold trains on those whose source is not held out, and none is scored",
    )
    lo.add_argument(
        "--fold-group",
        action="append",
        default=[],
        metavar="GLOB",
        help="sources matching GLOB (or any of GLOB|GLOB...) are held out together as one fold "
        "(repeatable), for sources that are not independent, e.g. 'debian:asterisk*': one voice, "
        "partly the same recordings",
    )
    lo.add_argument(
        "--min-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="leave the manifests' clips shorter than this out: neither trained on nor scored "
        "(--extra-manifest's copies stay in training; default 0: every clip)",
    )
    lo.add_argument(
        "--fold-partitions",
        type=int,
        default=0,
        metavar="K",
        help="deal the held-out cells (families, sources) into K folds of about equal size: K fits "
        "instead of one per cell, each cell still unseen by the head that scores it (a stricter "
        "test, since each fold trains on less); per-cell figures are reported as before (default 0: "
        "one fold per cell)",
    )
    lo.add_argument(
        "--fold-deal",
        type=int,
        default=0,
        metavar="SEED",
        help="with --fold-partitions: 0 deals the largest cells first (default); SEED >= 1 deals "
        "them in an order drawn from SEED. The partitions hold different cells out together, so "
        "a figure moves with the deal: run several to see by how much",
    )
    lo.add_argument("--layers", default="0,1,2,3", help="comma-separated hidden states")
    lo.add_argument("--C", type=float, default=0.01, help="inverse L2 strength of the logistic head")
    lo.add_argument(
        "--spectral",
        choices=("none", *_SPECTRAL_FRONT_ENDS),
        default="none",
        help="fuse LFCC (lfcc), LFCC and phase-coherence (lfcc-phase) statistics, or those plus"
        " the phase residual against a FARGAN remake of each window (lfcc-phase-resynth) or of"
        " each stream (lfcc-phase-resynth-streamed)",
    )
    lo.add_argument("--spectral-weight", type=float, default=2.0, help="weight of the spectral block")
    _add_runtime_options(lo)
    lo.add_argument(
        "--truncate-encoder",
        action="store_true",
        help="run only as many encoder layers as --layers needs (same states, faster extraction)",
    )
    _add_level_option(lo)
    lo.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    lo.add_argument(
        "--scores-out",
        metavar="CSV",
        help="write every held-out clip's score (utt_id,label,system,cell,channel,score; higher = "
        "more bona fide), for error analysis or fusion with another system's scores",
    )

    cs = sub.add_parser(
        "copysynth", help="neural-vocoder copies of the bona fide clips, as extra spoof training data"
    )
    _add_dataset(cs)
    cs.add_argument("--out", required=True, metavar="DIR", help="folder for the copies and manifest.csv")
    cs.add_argument(
        "--vocoder",
        metavar="PROGRAM",
        help="FARGAN demo program (default: $SPOOFWATCH_FARGAN or the one scripts/build_fargan.sh builds)",
    )
    cs.add_argument(
        "--pitch-shift",
        default="1.1,1.35",
        metavar="LOW,HIGH",
        help="scale each copy's pitch up or down by a factor drawn from [LOW, HIGH]; none: keep it",
    )
    cs.add_argument(
        "--seed", type=int, default=0, help="another draw of pitch factors (names the copies -fargan-psSEED)"
    )
    cs.add_argument("--workers", type=int, default=0, help="vocoder processes at once (0 = CPU count)")
    sv = sub.add_parser("serve", help="run the streaming server (WebSocket, MQTT, local sources)")
    _add_server_options(sv)
    sv.add_argument("--host", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="WebSocket/HTTP port (default 8765; 0 = any free port)")
    sv.add_argument(
        "--token",
        help="require this bearer token on every path (prefer $SPOOFWATCH_SERVER_TOKEN: argv is visible)",
    )
    sv.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="SPEC",
        help="local source: mic, mic:DEVICE, file:PATH (real-time), file+fast:PATH; repeatable",
    )
    sv.add_argument("--jsonl", metavar="PATH", help="also write every event as JSON lines (- = stdout)")
    sv.add_argument("--max-streams", type=int, help="admission limit on concurrent streams")
    sv.add_argument(
        "--audiosocket-port",
        type=int,
        metavar="P",
        help="also accept Asterisk AudioSocket calls (TCP) on this port",
    )
    sv.add_argument(
        "--siprec-port",
        type=int,
        metavar="P",
        help="also record SIPREC sessions (SIP on UDP and TCP) on this port",
    )
    sv.add_argument(
        "--siprec-tls-port", type=int, metavar="P", help="SIPREC over TLS on this port (needs --tls-cert)"
    )
    sv.add_argument("--rtp-ports", metavar="LOW-HIGH", help="SIPREC RTP port range (default 20000-20999)")
    sv.add_argument(
        "--siprec-allow",
        action="append",
        default=None,
        metavar="ADDR",
        help="SIPREC clients allowed: an address or network (10.0.0.0/8); repeatable (default: any)",
    )
    sv.add_argument("--siprec-max-sessions", type=int, help="concurrent SIPREC sessions (default 32)")
    sv.add_argument(
        "--admission",
        choices=("refuse", "queue"),
        help="beyond --max-streams: refuse new calls (default) or queue",
    )
    sv.add_argument("--queue-timeout-s", type=float, help="longest a queued call waits before it is refused")
    sv.add_argument("--tls-cert", metavar="PEM", help="serve wss:// and https:// with this certificate chain")
    sv.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (if not in the same file)")
    sv.add_argument("--max-stream-s", type=float, help="longest stream, seconds of audio (0 = no limit)")
    sv.add_argument("--max-messages-per-s", type=float, help="per-connection message rate limit")
    sv.add_argument("--score-max-bytes", type=int, metavar="N", help="POST /v1/score: largest body")
    sv.add_argument(
        "--score-max-duration-s", type=float, metavar="S", help="POST /v1/score: longest audio (seconds)"
    )
    sv.add_argument(
        "--drain-timeout",
        type=float,
        dest="drain_timeout_s",
        metavar="S",
        help="on SIGTERM refuse new calls and give live ones this long to end (default 30)",
    )
    sv.add_argument(
        "--cluster-view",
        action="store_const",
        const=True,
        default=None,
        help="relay every node's events from the MQTT broker (--mqtt) to this node's dashboard",
    )
    sv.add_argument(
        "--evidence-dir",
        metavar="DIR",
        help="save the audio and score timeline around each alarm here (recorded calls: docs/security.md)",
    )
    sv.add_argument(
        "--evidence-days", type=float, help="delete evidence older than this many days (default 30)"
    )
    sv.add_argument(
        "--evidence-seconds", type=float, help="seconds of audio per alarm clip, 5..300 (default 20)"
    )
    sv.add_argument(
        "--watch-detector",
        action="store_true",
        default=None,
        help="hot-reload the detector card when its directory's files change (also: SIGHUP)",
    )
    sv.add_argument("--watch-detector-interval-s", type=float, help="how often to poll it (default 2)")
    sv.add_argument(
        "--feedback-dir", metavar="DIR", help="store analyst feedback (marked windows' features) in DIR"
    )
    sv.add_argument("--feedback-windows", type=int, help="recent windows kept per stream (default 120)")
    sv.add_argument("--feedback-max-mb", type=float, help="memory for kept features, all streams (64)")
    sv.add_argument("--feedback-keep-s", type=float, help="keep an ended stream's windows this long (900)")
    _add_drift_options(sv)

    from spoofwatch.corpus.command import add_corpus_parser

    add_corpus_parser(sub)

    add_bench_parser(sub)
    from spoofwatch.pool.cli import add_pool_parser

    add_pool_parser(sub)
    add_soak_arguments(sub.add_parser("soak", help="long run of many streams: memory growth, drops, lag"))
    _SUBPARSERS.update(add_learning_parsers(sub))
    _SUBPARSERS["robustness"] = add_robustness_parser(sub)
    _SUBPARSERS["cache"] = add_cache_parser(sub)

    ls = sub.add_parser("listen", help="live microphone alert in the terminal")
    _add_server_options(ls)
    ls.add_argument("--device", help="input device name or index (default: the system default)")
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file with [stream], [engine], [server] tables")
    _add_detector(parser)
    parser.add_argument("--mqtt", metavar="URL", help="publish to an MQTT broker, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--node", help="node name in MQTT topics (default: node)")
    parser.add_argument("--mqtt-ca-file", metavar="PEM", help="CA bundle that signs an mqtts:// broker")
    parser.add_argument("--mqtt-username", help="MQTT user (password: $SPOOFWATCH_SERVER_MQTT_PASSWORD)")
    parser.add_argument(
        "--webhook",
        action="append",
        default=None,
        metavar="URL",
        help="POST alarm events to this URL; repeatable",
    )
    parser.add_argument(
        "--webhook-secret",
        help="HMAC key that signs webhooks (prefer $SPOOFWATCH_SERVER_WEBHOOK_SECRET: argv is visible)",
    )
    parser.add_argument(
        "--webhook-events",
        metavar="TYPES",
        help="event types to POST: all, or comma-separated from alarm,evidence,stream,gap,error,status "
        "(default alarm)",
    )
    _add_scorer_options(parser)


def _add_drift_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drift-window-s", type=float, metavar="S", help="drift alarms: sliding period of windows (900)"
    )
    parser.add_argument(
        "--drift-threshold",
        type=float,
        metavar="BITS",
        help="drift alarms: Jensen-Shannon divergence from the card's reference that fires (0.1; 0 = off)",
    )
    parser.add_argument(
        "--drift-min-windows",
        type=int,
        metavar="N",
        help="drift alarms: windows needed before one fires (300)",
    )
    parser.add_argument(
        "--drift-spoof-share",
        type=float,
        metavar="F",
        help="drift alarms: share of the reference's spoof windows mixed in (0)",
    )
    parser.add_argument(
        "--drift-reference",
        metavar="FILE",
        help="drift alarms: compare with this node's own reference (scripts/drift_reference.py --out), "
        "not the card's",
    )


def _server_settings(args: argparse.Namespace) -> Any:
    from spoofwatch.config import load_settings

    flags = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "token": getattr(args, "token", None),
        "mqtt": args.mqtt,
        "node": args.node,
        "sources": tuple(args.source) if getattr(args, "source", None) else None,
        "jsonl": getattr(args, "jsonl", None),
        "detector": args.detector,
        "audiosocket_port": getattr(args, "audiosocket_port", None),
        "siprec_port": getattr(args, "siprec_port", None),
        "siprec_tls_port": getattr(args, "siprec_tls_port", None),
        "rtp_ports": getattr(args, "rtp_ports", None),
        "siprec_allow": tuple(args.siprec_allow) if getattr(args, "siprec_allow", None) else None,
        "siprec_max_sessions": getattr(args, "siprec_max_sessions", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
        "max_messages_per_s": getattr(args, "max_messages_per_s", None),
        "score_max_bytes": getattr(args, "score_max_bytes", None),
        "score_max_duration_s": getattr(args, "score_max_duration_s", None),
        "drain_timeout_s": getattr(args, "drain_timeout_s", None),
        "cluster_view": getattr(args, "cluster_view", None),
        "mqtt_ca_file": args.mqtt_ca_file,
        "mqtt_username": args.mqtt_username,
        "webhooks": tuple(args.webhook) if args.webhook else None,
        "webhook_secret": args.webhook_secret,
        "webhook_events": args.webhook_events,
        "evidence_dir": getattr(args, "evidence_dir", None),
        "evidence_days": getattr(args, "evidence_days", None),
        "evidence_seconds": getattr(args, "evidence_seconds", None),
        **{
            k: getattr(args, k, None)
            for k in (
                "watch_detector",
                "watch_detector_interval_s",
                "feedback_dir",
                "feedback_windows",
                "feedback_max_mb",
                "feedback_keep_s",
            )
        },
    }
    overrides: dict[str, dict[str, Any]] = {"server": {k: v for k, v in flags.items() if v is not None}}
    engine = {
        k: getattr(args, k, None)
        for k in (
            "max_streams",
            "admission",
            "queue_timeout_s",
            "max_stream_s",
            "scorer",
            "ray_address",
            "ray_inflight",
            "drift_window_s",
            "drift_threshold",
            "drift_min_windows",
            "drift_spoof_share",
            "drift_reference",
        )
    }
    engine["device"] = getattr(args, "engine_device", None)  # listen's --device is the microphone
    if any(v is not None for v in engine.values()):
        overrides["engine"] = {k: v for k, v in engine.items() if v is not None}
    return load_settings(args.config, overrides=overrides)


def _load_scorer(settings: Any) -> Any:
    """The local detector, or (``[engine] scorer``) the inference pool's scorer."""
    from spoofwatch.config import detector_options
    from spoofwatch.model.artifact import load_detector

    stream, engine = settings.stream, settings.engine
    local = None
    if engine.scorer != "ray":
        local = load_detector(
            settings.server.detector, window_s=stream.window_s, hop_s=stream.hop_s, **detector_options(engine)
        )
    if engine.scorer == "local":
        return local
    from spoofwatch.pool.client import RayPoolHandle, RayScorer

    scorer = RayScorer(
        RayPoolHandle(engine.ray_address or None),
        fallback=local,
        timeout_s=engine.ray_timeout_s,
        inflight=engine.ray_inflight,
        fallback_workers=engine.workers,
    )
    window_samples = round(stream.window_s * scorer.sample_rate)
    if window_samples != scorer.window_samples:
        raise ConfigError(
            f"stream.window_s: the pool's detector takes {scorer.window_samples / scorer.sample_rate:g} s "
            f"windows, {stream.window_s:g} s configured; expected the same"
        )
    return scorer


def _add_scorer_options(
    parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("local", "ray", "ray,local")
) -> None:
    parser.add_argument(
        "--scorer",
        choices=choices,
        help="who scores windows: local (default), ray (the inference pool, `spoofwatch pool up`), "
        "ray,local (the pool; this process while the pool is unreachable)",
    )
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster of the pool, host:port (default: auto)"
    )
    parser.add_argument(
        "--ray-inflight",
        type=int,
        metavar="N",
        help="batches in flight to the pool (default: [engine] ray_inflight, 8; about 2 per replica)",
    )
    _add_device_option(parser)


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder-device",
        dest="engine_device",
        metavar="DEV",
        help="where this process's encoder runs: cpu (default), cuda, cuda:N, auto (a GPU if there "
        "is one); int8 layers run emulated there ([engine] device)",
    )


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from spoofwatch.model.card_label import CardLabel, scorer_label
    from spoofwatch.stream.app import serve
    from spoofwatch.stream.engine.reload import CardLoader, detector_loader

    settings = _server_settings(args)
    detector = _load_scorer(settings)
    card: CardLabel = scorer_label(detector)
    loader: CardLoader | None = None
    if settings.engine.scorer == "local":  # the pool's replicas hold their card: no hot reload
        loader = detector_loader(settings)  # reloads load cards as _load_scorer does
        if isinstance(getattr(detector, "card", None), dict):
            from spoofwatch.model.identity import card_identity

            card = card_identity(settings.server.detector)
    logger.info(
        "serving on %s://%s:%s (detector %s, sha256 %s)",
        "wss" if settings.server.tls_cert else "ws",
        settings.server.host,
        settings.server.port,
        card.name,
        card.short,
    )
    asyncio.run(serve(settings, detector, card=card, loader=loader))
    return 0


def cmd_listen(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from spoofwatch.stream.app import listen

    settings = _server_settings(args)
    detector = _load_scorer(settings)
    asyncio.run(listen(settings, detector, device=args.device, out=out))
    return 0


def _configure(args: argparse.Namespace) -> None:
    # A server's log says what it is doing (INFO); the other commands speak only when asked.
    base = logging.INFO if args.command == "serve" else logging.WARNING
    level = max(logging.DEBUG, base - 10 * min(args.verbose, 2))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _format_clip(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{result['path']}: ERROR {result['error']}"
    lines = [
        f"{result['path']}: {result['label'].upper()}  p_spoof={result['p_spoof']:.3f}  "
        f"score={result['score']:+.2f}  ({result['duration_s']:.1f} s, {len(result['windows'])} windows)"
    ]
    for w in result["windows"]:
        bar = "#" * round(w["p_spoof"] * 20)
        lines.append(f"  {w['t_start']:7.2f}-{w['t_end']:7.2f} s  p_spoof={w['p_spoof']:.3f} |{bar:<20}|")
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.model.artifact import load_detector
    from spoofwatch.train.clip_scoring import score_files

    detector = load_detector(args.detector, device=args.engine_device)
    failures = 0
    for clip in score_files(detector, args.files):
        result = clip.to_dict()
        failures += clip.error is not None
        print(json.dumps(result) if args.json else _format_clip(result), file=out, flush=True)
    if failures:
        print(f"spoofwatch: {failures} of {len(args.files)} file(s) could not be scored", file=sys.stderr)
    return 1 if failures else 0


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """How the encoder runs; the head is fitted (and, for train, the card written) for it."""
    parser.add_argument(
        "--quantization",
        default="none",
        choices=QUANTIZATION_MODES,
        help="dynamic int8 Linear layers of the encoder; the head is fitted on those features",
    )
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="runtime of the encoder (onnxruntime: the [onnx] extra); the head is fitted on its features",
    )


def _read_items(args: argparse.Namespace, prefix: str = "") -> list[Any] | None:
    from spoofwatch.train.corpus import read_manifest, read_protocol

    key = prefix.replace("-", "_")
    manifest = getattr(args, f"{key}manifest")
    protocol = getattr(args, f"{key}protocol")
    if isinstance(manifest, list):
        return _read_manifests(manifest, f"--{prefix}manifest")
    if manifest:
        return read_manifest(manifest)
    if protocol:
        audio_dir = getattr(args, f"{key}audio_dir")
        if not audio_dir:
            raise SpoofwatchError(
                f"--{prefix}protocol needs --{prefix}audio-dir (the folder of the audio files)"
            )
        return read_protocol(protocol, audio_dir, getattr(args, f"{key}ext"))
    return None


def _read_manifests(paths: Sequence[str], flag: str) -> list[Any]:
    """The rows of every manifest, refusing a utt_id that two of them share."""
    from spoofwatch.train.corpus import read_manifest

    items = [item for path in paths for item in read_manifest(path)]
    repeated = sorted(name for name, n in Counter(it.utt_id for it in items).items() if n > 1)
    if repeated:
        raise DataError(
            f"{flag}: expected unique utt_id values across the manifests, found {repeated[:5]} "
            f"in more than one ({len(repeated)} in all)"
        )
    return items


def _channel_list(text: str | None) -> tuple[str, ...]:
    """``clean,telephone`` → ("clean", "telephone"); None or empty → ()."""
    return tuple(c for c in (text or "").split(",") if c)


def _read_extra_items(paths: Sequence[str]) -> list[Any]:
    from spoofwatch.train.corpus import read_manifest

    return [item for path in paths for item in read_manifest(path)]


def _window_lengths(text: str) -> tuple[float, ...]:
    try:
        lengths = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        lengths = (math.nan,)
    if not all(0.0 < x <= 30.0 for x in lengths):
        raise ConfigError(f"--window-lengths {text!r}: expected seconds in (0, 30], e.g. 1,2,3,4")
    return lengths


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.train.evaluate import evaluate_detector

    items = _read_items(args) or []
    if args.split:
        from spoofwatch.train.corpus import filter_split

        items = filter_split(items, args.split)
    lengths = _window_lengths(args.window_lengths)
    result = evaluate_detector(
        args.detector, items, channel=args.channel, out_dir=args.out, window_lengths=lengths
    )
    summary = result.summary()
    if not args.json:
        print(result.human(), file=out)
    else:
        print(json.dumps(summary), file=out)
    return 0


def _add_level_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--level-dbfs",
        type=_level_or_none,
        default=None,
        metavar="DBFS",
        help="bring every window to this active speech level before the encoders, e.g. -26; "
        "none (the default): windows as they come; a trained card keeps it",
    )


def _chunk_lengths(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive message lengths in ms (e.g. 20 or 20,40), found {text!r}"
        )
    return lengths


def _level_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a level in dBFS (e.g. -26) or none, found {text!r}"
        ) from None


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.train.pipeline import HEAD_FIELDS, TrainOptions, train_detector

    items = _read_items(args) or []
    dev_items = _read_items(args, "dev-")
    options = TrainOptions(
        encoder=args.encoder,
        window_s=args.window_s,
        hop_s=args.hop_s,
        train_hop_s=args.train_hop_s,
        channels=_channel_list(args.channels),
        calibration_channels=_channel_list(args.calibration_channels) if args.calibration_channels else None,
        extra_channels=_channel_list(args.extra_channels) if args.extra_channels else None,
        layers=None if not args.layers else tuple(int(x) for x in args.layers.split(",")),
        C=args.C,
        name=args.name,
        threshold=args.threshold,
        truncate_encoder=args.truncate_encoder,
        quantization=args.quantization,
        backend=args.backend,
        spectral=None if args.spectral == "none" else args.spectral,
        spectral_weight=args.spectral_weight,
        level_dbfs=args.level_dbfs,
        fit_precision=args.fit_precision,
        source_cap=args.source_cap,
        balance_by=_channel_list(args.balance_by),
        dev_min_s=args.dev_min_s,
        train_min_s=args.train_min_s,
        **{name: getattr(args, name) for name in HEAD_FIELDS},
    )
    report = train_detector(
        items, dev_items, Path(args.out), options, extra_items=_read_extra_items(args.extra_manifest)
    )
    if args.json:
        print(json.dumps(report), file=out)
    else:
        print(json.dumps(report, indent=2), file=out)
    return 0


def _loso_items(args: argparse.Namespace) -> list[Any]:
    from spoofwatch.train.corpus import read_protocol

    if args.manifest:
        items = _read_manifests(args.manifest, "--manifest")
    else:
        if not args.audio_dir:
            raise SpoofwatchError("--protocol needs --audio-dir (the folder of the audio files)")
        items = read_protocol(args.protocol, args.audio_dir, args.ext)
    if args.split:
        splits = set(_channel_list(args.split))
        items = [it for it in items if it.split in splits]
        if not items:
            raise DataError(f"--split {args.split}: no rows of these splits in the manifests")
    return items


def _write_loso_scores(path: Path, scheme: Any, results: Mapping[str, Any]) -> None:
    import csv
    import math

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["utt_id", "label", "system", "cell", "channel", "score"])
        for channel, result in results.items():
            for item, score in zip(result.items, result.clip_scores, strict=True):
                if not math.isnan(score):
                    writer.writerow(
                        [item.utt_id, item.label, item.system, scheme.key(item), channel, f"{score:.6f}"]
                    )


class LosoRun(NamedTuple):
    """What ``_loso_results`` ran: the fold scheme, each test channel's result, and the
    extra (training-only) items and channels it added."""

    scheme: Any
    results: dict[str, Any]
    extra_items: list[Any]
    extra_channels: str
    mlp: Any


def _loso_results(args: argparse.Namespace, added: Sequence[tuple[list[Any], Sequence[str]]] = ()) -> LosoRun:
    """``spoofwatch loso``'s extraction and leave-one-out. ``added``: more training-only
    items, each list through its own channels (``research/added_bonafide_lofo.py``)."""
    import numpy as np

    from spoofwatch.model.encoders.registry import build_encoder
    from spoofwatch.stream.core.windowing import WindowConfig
    from spoofwatch.train.corpus import at_least
    from spoofwatch.train.extract import extract_with_spectral
    from spoofwatch.train.pipeline import encoder_spec, feature_encoder, mlp_options, spectral_front_end_spec
    from spoofwatch.train.validate import FoldScheme, leave_one_fold_out

    mlp = mlp_options(args)  # before hours of extraction
    items = at_least(_loso_items(args), args.min_s, "--min-s")
    scheme = FoldScheme(
        args.fold_by, args.bonafide_fold_by, tuple(args.fold_group), args.fold_partitions, args.fold_deal
    )
    scheme.check(items)  # before hours of extraction
    test_channels = _channel_list(args.test_channel)
    if not test_channels:
        raise ConfigError("--test-channel: expected at least one channel")
    layers = [int(x) for x in args.layers.split(",")]
    truncate_to = layers if args.truncate_encoder else None
    _, _, encoder = feature_encoder(
        encoder_spec(args.encoder), args.window_s, truncate_to, args.quantization, args.backend
    )
    window = WindowConfig(encoder.identity.sample_rate, args.window_s, args.hop_s)
    spectral_spec = spectral_front_end_spec(None if args.spectral == "none" else args.spectral)
    spectral = None if spectral_spec is None else build_encoder(spectral_spec, args.window_s)

    def embed(chosen: list[Any], channel: str) -> Any:
        return extract_with_spectral(
            chosen, encoder, spectral, window, channel=channel, level_dbfs=args.level_dbfs
        )

    train_sets = [embed(items, c) for c in _channel_list(args.train_channels)]
    test_sets = {c: embed(items, c) for c in test_channels}
    extra_items = _read_extra_items(args.extra_manifest)
    extra_channels = args.extra_channels or args.train_channels
    extra_sets = [embed(extra_items, c) for c in _channel_list(extra_channels) if extra_items]
    extra_sets += [embed(chosen, c) for chosen, channels in added if chosen for c in channels]
    results = leave_one_fold_out(
        train_sets,
        test_sets,
        layers,
        scheme=scheme,
        C=args.C,
        spectral_weight=args.spectral_weight,
        extra_sets=extra_sets,
        fit_dtype=np.float32 if args.fit_precision == "float32" else np.float64,
        source_cap=args.source_cap,
        balance_by=_channel_list(args.balance_by),
        window_s=args.window_s,
        mlp=mlp,
    )
    return LosoRun(scheme, results, extra_items, extra_channels, mlp)


def cmd_loso(args: argparse.Namespace, out: TextIO) -> int:
    scheme, results, extra_items, extra_channels, mlp = _loso_results(args)
    if args.scores_out:
        _write_loso_scores(Path(args.scores_out), scheme, results)
    protocol = "leave-one-source-out" if not scheme.separate else f"leave-one-{args.fold_by}-out"
    common = {
        "protocol": protocol,
        "fold_by": args.fold_by,
        "bonafide_fold_by": args.bonafide_fold_by if scheme.separate else args.fold_by,
        "manifests": args.manifest,
        "split": args.split,
        "train_channels": args.train_channels,
        "extra_manifests": args.extra_manifest,
        "extra_items": len(extra_items),
        "extra_channels": extra_channels if extra_items else None,
        "fold_groups": args.fold_group,
        "fold_partitions": args.fold_partitions,
        "fold_deal": args.fold_deal,
        "source_cap": args.source_cap,
        "balance_by": args.balance_by,
        "min_s": args.min_s,
        "spectral": args.spectral,
        "spectral_weight": args.spectral_weight,
        "quantization": args.quantization,
        "backend": args.backend,
        "level_dbfs": args.level_dbfs,
        "fit_precision": args.fit_precision,
        "head": args.head if mlp is None else {"kind": "mlp", **mlp.to_dict()},
    }
    summaries = {
        channel: {
            **result.metrics.to_dict(),
            **common,
            "test_channel": channel,
            "per_source_eer": result.per_source_eer,
            "per_source_bonafide_mean": result.per_source_bonafide_mean,
            "folds": result.folds,
        }
        for channel, result in results.items()
    }
    if args.json:
        only = len(summaries) == 1
        print(
            json.dumps(next(iter(summaries.values())) if only else {**common, "test_channels": summaries}),
            file=out,
        )
        return 0
    for channel, result in results.items():
        m = result.metrics
        print(
            f"{protocol} ({channel}): EER {m.eer * 100:.2f} %  minDCF {m.min_dcf:.4f}  "
            f"AUC {m.auc:.4f}  ({m.n_bonafide} bona fide, {m.n_spoof} spoof)",
            file=out,
        )
        if not scheme.separate:
            for name, eer in sorted(result.per_source_eer.items(), key=lambda kv: -kv[1]):
                print(f"  spoof of {name:<60} EER {eer * 100:6.2f} %", file=out)
            for name, mean in sorted(result.per_source_bonafide_mean.items(), key=lambda kv: kv[1]):
                print(f"  bona fide of {name:<56} mean score {mean:6.2f}", file=out)
            continue
        folds = result.folds
        for name in sorted(
            (n for n in folds if "spoof_eer" in folds[n]), key=lambda n: -folds[n]["spoof_eer"]
        ):
            fold = folds[name]
            print(
                f"  {name:<62} EER {fold['spoof_eer'] * 100:6.2f} %  missed at the pooled EER "
                f"{fold['missed'] * 100:5.1f} %  ({fold['spoof_clips']} clips)",
                file=out,
            )
        for name in sorted(
            (n for n in folds if "false_alarms" in folds[n]), key=lambda n: -folds[n]["false_alarms"]
        ):
            fold = folds[name]
            print(
                f"  {name:<62} false alarms at the pooled EER {fold['false_alarms'] * 100:5.1f} %  "
                f"mean score {fold['bonafide_mean_score']:6.2f}  ({fold['bonafide_clips']} clips)",
                file=out,
            )
    return 0


def cmd_copysynth(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.model.resynthesis.vocoder import find_vocoder
    from spoofwatch.train.copysynth import parse_pitch_shift, write_copies

    vocoder = find_vocoder(args.vocoder)
    pitch_shift = parse_pitch_shift(args.pitch_shift, args.seed)
    if args.workers < 0:
        raise ConfigError(f"--workers: expected 0 (CPU count) or more, found {args.workers}")
    items = _read_items(args) or []
    report = write_copies(
        items, Path(args.out), vocoder, pitch_shift=pitch_shift, workers=args.workers or None
    )
    print(f"{report.written} copies in {report.manifest}", file=out)
    if report.failed:
        print(f"{len(report.failed)} clips not copied (see the warnings above)", file=out)
    return 0


# --- bench and soak (ops/) -------------------------------------------------------------


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``spoofwatch bench`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="throughput and latency of the real streaming pipeline"
    )
    parser.add_argument("--streams", type=int, help="run N concurrent streams (default: search for the max)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run (default 20)")
    parser.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")
    parser.add_argument(
        "--detector", metavar="DIR", help="detector directory or packaged name (default, resynth)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file with [stream] and [engine] tables")
    parser.add_argument("--batch", type=int, help="largest batch of windows per model call")
    parser.add_argument("--max-wait-ms", type=float, help="longest wait for a batch to fill")
    parser.add_argument("--threads", type=int, help="torch intra-op threads for scoring (0 = torch default)")
    parser.add_argument("--workers", type=int, help="inference worker threads (default: [engine] workers, 2)")
    parser.add_argument(
        "--quantization",
        metavar="MODE",
        help="encoder Linear layers: none | int8 (all but FFN outputs) | int8-all | int8-window "
        "(default: the card's)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="runtime of the encoder (default: the card's; onnxruntime needs the [onnx] extra)",
    )
    parser.add_argument("--int8", action="store_true", help="shorthand for --quantization int8")
    parser.add_argument("--hop-s", type=float, help="hop between windows (default: the detector's, 1 s)")
    parser.add_argument("--sample-rate", type=int, default=16000, help="input rate of the synthetic streams")
    parser.add_argument(
        "--chunk-ms",
        type=_chunk_lengths,
        default=None,
        metavar="MS[,MS...]",
        help="message lengths the streams take in turn (default 20,40,60,80,100); "
        "20 is what telephony sources (Twilio, AudioHook, AudioSocket) send",
    )
    parser.add_argument("--max-probes", type=int, default=6, help="most runs in the search (default 6)")
    parser.add_argument("--no-search", action="store_true", help="only the --streams run")
    parser.add_argument(
        "--encoder-only", action="store_true", help="time encoder forward passes by batch size"
    )
    _add_scorer_options(parser, choices=("local", "ray"))
    parser.add_argument(
        "--compare-scorers",
        action="store_true",
        help="run local, then ray (the pool) in one process: the remote hop's cost as ratios",
    )
    parser.add_argument(
        "--pool-replicas",
        metavar="N,M",
        help="with ray: redeploy the pool (`pool up --replicas N --num-cpus 1`) before each run",
    )
    return parser


def _format_bench_report(report: BenchReport) -> str:
    setup = report.setup
    lines = [
        f"encoder {setup['encoder']} ({setup['quantization']}), {setup['torch_threads']} threads, "
        f"batch <= {setup['max_batch']}, wait <= {setup['max_wait_ms']} ms, "
        f"window {setup['window_s']} s / hop {setup['hop_s']} s, load average {setup['load_average_1m']:.2f}",
        f"RTF (one stream): {report.rtf:.4f}  ({report.ms_per_window:.1f} ms per window; "
        f"CPU-time RTF {report.cpu_rtf:.4f})",
    ]
    if report.max_realtime_streams is not None:
        lines += [
            f"max real-time streams (p99 lag <= 1 s, no drops): {report.max_realtime_streams}",
            f"at {report.streams} streams: p50 lag {report.p50_latency_ms:.1f} ms, p99 lag "
            f"{report.p99_latency_ms:.1f} ms, {report.windows_per_s:.1f} windows/s, "
            f"{report.dropped_windows} dropped",
        ]
    lines.append(f"peak RSS: {report.peak_rss_mb:.0f} MB")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    """Entry point for ``spoofwatch bench``."""
    from dataclasses import replace

    from spoofwatch.config import detector_options, load_settings
    from spoofwatch.model.artifact import load_detector
    from spoofwatch.ops.bench import CHUNK_MS, BenchOptions, run_bench, run_encoder_only

    flags = {
        "max_batch": args.batch,
        "max_wait_ms": args.max_wait_ms,
        "num_threads": args.threads,
        "workers": args.workers,
        "ray_inflight": args.ray_inflight,
        "device": args.engine_device,
    }
    overrides: dict[str, dict[str, Any]] = {"engine": {k: v for k, v in flags.items() if v is not None}}
    settings = load_settings(args.config, overrides=overrides)
    engine = settings.engine
    quantization = "int8" if args.int8 else args.quantization
    detector = load_detector(
        args.detector or settings.server.detector,
        hop_s=args.hop_s,
        **detector_options(engine, quantization=quantization, backend=args.backend),
    )
    # The detector fixes the window; the hop is its own unless --hop-s says otherwise.
    stream = replace(settings.stream, window_s=detector.settings.window_s, hop_s=detector.settings.hop_s)
    options = BenchOptions(
        streams=args.streams,
        seconds=args.seconds,
        search=not args.no_search,
        max_probes=args.max_probes,
        input_rate=args.sample_rate,
        chunk_ms=args.chunk_ms or CHUNK_MS,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr if args.json else out, flush=True)

    if args.compare_scorers or args.pool_replicas or args.scorer == "ray":
        return _bench_scorers(args, detector, stream, engine, options, progress, out)
    if args.encoder_only:
        report = run_encoder_only(detector, stream, engine, options, progress=progress)
    else:
        report = run_bench(detector, stream, engine, options, progress=progress)
    if args.json:
        print(json.dumps(report.to_dict()), file=out)
    else:
        print(_format_bench_report(report), file=out)
    return 0


BENCH_RAY_TIMEOUT_S = 120.0


def _bench_scorers(
    args: argparse.Namespace,
    detector: Any,
    stream: Any,
    engine: Any,
    options: Any,
    progress: Any,
    out: TextIO,
) -> int:
    """``bench --scorer ray``, ``--compare-scorers``, ``--pool-replicas``: see ops.bench_scorers."""
    from spoofwatch.ops.bench_scorers import compare, format_comparison, run_scorers
    from spoofwatch.pool.client import RayPoolHandle, RayScorer
    from spoofwatch.pool.control import pool_up
    from spoofwatch.pool.spec import PoolSpec

    if args.encoder_only:
        raise ConfigError("bench: --encoder-only times the local encoder; expected no --scorer ray options")
    address = args.ray_address or engine.ray_address or None
    try:
        replicas = [int(n) for n in args.pool_replicas.split(",")] if args.pool_replicas else [None]
    except ValueError:
        raise ConfigError(
            f"--pool-replicas: expected counts like 1,2, found {args.pool_replicas!r}"
        ) from None

    def pool_scorer(count: int | None) -> Any:
        if count is not None:
            pool_up(PoolSpec(detector=args.detector, min_replicas=count, max_replicas=count), address)
        # A bench measures lag; it does not test failover: a slow pool is a result, not an outage.
        return RayScorer(
            RayPoolHandle(address),
            timeout_s=max(engine.ray_timeout_s, BENCH_RAY_TIMEOUT_S),
            inflight=engine.ray_inflight,
        )

    scorers: list[tuple[str, Any]] = []
    if args.compare_scorers or args.scorer != "ray":
        scorers.append(("local", lambda: detector))
    for count in replicas:
        label = "ray" if count is None else f"ray-{count}"
        scorers.append((label, lambda count=count: pool_scorer(count)))
    runs = run_scorers(scorers, stream, engine, options, progress)
    table = compare(runs)
    if args.json:
        reports = {r.label: r.report.to_dict() for r in runs}
        print(json.dumps({"scorers": table, "reports": reports}), file=out)
    else:
        for run in runs:
            print(f"[{run.label}]\n{_format_bench_report(run.report)}", file=out)
        print(format_comparison(table), file=out)
    return 0


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spoofwatch soak``."""
    from spoofwatch.ops.soak import TRANSPORTS

    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent call slots (default 8)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument(
        "--call-s", default="30,120", metavar="MIN,MAX", help="call length range in seconds (default 30,120)"
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="websocket", help="how calls arrive")
    parser.add_argument("--sample-rate", type=int, default=8000, help="input rate of the calls (Hz)")
    parser.add_argument(
        "--detector", metavar="DIR", help="detector directory or packaged name (default, resynth)"
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file with [stream] and [engine] tables")
    parser.add_argument("--json", action="store_true", help="last line of stdout is one JSON object")


def _parse_call_s(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--call-s: expected MIN,MAX seconds, found {text!r}") from None
    return low, high


def _load_soak_scorer(args: argparse.Namespace, engine: EngineConfig) -> WindowScorer:
    from spoofwatch.config import detector_options
    from spoofwatch.model.artifact import load_detector

    return load_detector(args.detector, **detector_options(engine))


def _format_soak_report(report: SoakReport) -> str:
    flat = "flat" if report.memory_flat else "GROWING"
    return "\n".join(
        [
            f"soak: {report.minutes:g} min, {report.streams} streams ({report.transport}), "
            f"{report.calls_completed} calls, {report.windows_scored} windows scored, "
            f"{report.windows_dropped} dropped, {report.windows_failed} failed",
            f"lag p50 {report.p50_lag_ms:.1f} ms, p99 {report.p99_lag_ms:.1f} ms, "
            f"max {report.max_lag_ms:.1f} ms",
            f"RSS {report.rss_start_mb:.1f} -> {report.rss_end_mb:.1f} MB (peak {report.rss_peak_mb:.1f}); "
            f"after warm-up {report.growth_mb:+.1f} MB, {report.growth_mb_per_hour:+.2f} MB/h "
            f"({report.growth_pct_per_hour:+.2f} %/h): {flat}",
            f"errors {report.error_events or 'none'}; live streams at end {report.live_streams_at_end}; "
            f"tasks left over {report.tasks_left_over}",
        ]
    )


def cmd_corpus(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.corpus.command import cmd_corpus as run

    return run(args, out)


def cmd_soak(args: argparse.Namespace, out: TextIO) -> int:
    """Entry point for ``spoofwatch soak``; exit status 1 when memory grew or streams leaked."""
    import asyncio
    from dataclasses import replace

    from spoofwatch.config import load_settings
    from spoofwatch.ops.soak import SoakOptions, run_soak

    settings = load_settings(args.config)
    scorer = _load_soak_scorer(args, settings.engine)
    stream = settings.stream
    detector_settings = getattr(scorer, "settings", None)
    if detector_settings is not None:  # the detector fixes the window and its hop
        stream = replace(stream, window_s=detector_settings.window_s, hop_s=detector_settings.hop_s)
    options = SoakOptions(
        minutes=args.minutes,
        streams=args.streams,
        sample_every_s=args.sample_s,
        call_s=_parse_call_s(args.call_s),
        transport=args.transport,
        input_rate=args.sample_rate,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr if args.json else out, flush=True)

    report = asyncio.run(
        run_soak(
            scorer,
            minutes=options.minutes,
            streams=options.streams,
            stream_config=stream,
            engine_config=settings.engine,
            options=options,
            progress=progress,
        )
    )
    print(json.dumps(report.to_dict()) if args.json else _format_soak_report(report), file=out, flush=True)
    leaked = report.live_streams_at_end or report.tasks_left_over
    return 0 if report.memory_flat and not leaked else 1


def cmd_pool(args: argparse.Namespace, out: TextIO) -> int:
    from spoofwatch.pool.cli import cmd_pool as run_pool

    return run_pool(args, out)


COMMANDS = {
    "bench": cmd_bench,
    "soak": cmd_soak,
    "corpus": cmd_corpus,
    "loso": cmd_loso,
    "copysynth": cmd_copysynth,
    "score": cmd_score,
    "eval": cmd_eval,
    "train": cmd_train,
    "serve": cmd_serve,
    "listen": cmd_listen,
    "pool": cmd_pool,
    **LEARNING_COMMANDS,
    "robustness": cmd_robustness,
    "cache": cmd_cache,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure(args)
    try:
        if getattr(args, "recipe", None):
            from spoofwatch.train.recipe import as_cli_defaults, load_recipe

            # The recipe's values become the defaults; flags given on the command line win.
            _SUBPARSERS["train"].set_defaults(**as_cli_defaults(load_recipe(args.recipe)))
            args = parser.parse_args(argv)
        return COMMANDS[args.command](args, out or sys.stdout)
    except SpoofwatchError as exc:
        print(f"spoofwatch: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"spoofwatch: error: {args.command} needs {exc.name}, from the [{extra}] extra; "
            f"expected it installed: pip install 'spoofwatch[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
