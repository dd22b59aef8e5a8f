"""Leave-one-family-out scores (``spoofwatch loso --scores-out``) broken down by what the
manifests say of each clip: pooled EER per channel, and per spoof ``kind``, ``year`` band
and zero-shot flag (each group's spoofs against every held-out bona fide clip), and per bona
fide tag (each tag's bona fide clips against every held-out spoof), with the share of the
tag's clips flagged at the pooled EER threshold; "read English" groups the bona fide clips
whose ``corpus`` is one of READ_ENGLISH (demo pages' ground truth); ``rate`` groups both
classes by the original file's sample rate (``orig_sr``: 8 kHz or less, 16 kHz, above), where
narrowband originals of one class only would be a shortcut. EER as the ASVspoof
evaluation package computes it (``spoofwatch.train.metrics.compute_eer``).

    python research/lofo_report.py --scores lofo.csv --manifest BUILT/manifest.csv \\
        --manifest dev-families.csv [--min-s 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from spoofwatch.train.metrics import compute_eer

READ_ENGLISH = ("LibriTTS", "LibriSpeech", "VCTK", "LJSpeech")


def year_band(year: str) -> str:
    if not year.isdigit():
        return "unknown"
    return "2023 or later" if int(year) >= 2023 else "before 2023"


def rate_band(orig_sr: str) -> str:
    """The original sample rate's band: a narrowband (telephone, radio) original or not."""
    if not orig_sr.isdigit():
        return "unknown"
    rate = int(orig_sr)
    return "<= 8 kHz" if rate <= 8000 else "16 kHz" if rate <= 16000 else "> 16 kHz"


def report(scores: Path, manifests: list[Path], min_s: float = 0.0) -> dict[str, dict[str, dict[str, float]]]:
    meta: dict[str, dict[str, str]] = {}
    for manifest in manifests:
        with manifest.open() as handle:
            for row in csv.DictReader(handle):
                meta[row["utt_id"]] = row
    by_channel: dict[str, list[dict[str, str]]] = defaultdict(list)
    with scores.open() as handle:
        for row in csv.DictReader(handle):
            # Clips shorter than min_s (the manifests' duration_s) are left out.
            if min_s and float(meta.get(row["utt_id"], {}).get("duration_s") or 0.0) < min_s:
                continue
            by_channel[row["channel"]].append(row)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for channel, rows in by_channel.items():
        bona = np.array([float(r["score"]) for r in rows if r["label"] == "bonafide"])
        spoof_rows = [r for r in rows if r["label"] == "spoof"]
        spoof = np.array([float(r["score"]) for r in spoof_rows])
        eer, threshold = compute_eer(bona, spoof)[:2]
        section: dict[str, dict[str, float]] = {
            "pooled": {"eer": eer, "threshold": threshold, "bonafide": len(bona), "spoof": len(spoof)}
        }
        groups: dict[str, list[float]] = defaultdict(list)
        for r in spoof_rows:
            m = meta.get(r["utt_id"], {})
            score = float(r["score"])
            groups[f"kind:{m.get('kind') or 'development corpus'}"].append(score)
            groups[f"year:{year_band(m.get('year', ''))}"].append(score)
            if m.get("zero_shot") == "true":
                groups["zero-shot"].append(score)
            if m.get("streaming") == "true":
                groups["streaming"].append(score)
            groups[f"rate:{rate_band(m.get('orig_sr', ''))}"].append(score)
        for name, values in sorted(groups.items()):
            section[name] = {"eer": compute_eer(bona, np.array(values))[0], "spoof": len(values)}
        tagged: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r["label"] != "bonafide":
                continue
            m = meta.get(r["utt_id"], {})
            for tag in filter(None, m.get("tags", "").split(";")):
                tagged[f"bonafide:{tag}"].append(float(r["score"]))
            if any(name in m.get("corpus", "") for name in READ_ENGLISH):
                tagged["bonafide:read English (demo pages)"].append(float(r["score"]))
            tagged[f"bonafide rate:{rate_band(m.get('orig_sr', ''))}"].append(float(r["score"]))
        for name, values in sorted(tagged.items()):
            held = np.array(values)
            section[name] = {
                "eer": compute_eer(held, spoof)[0],
                "bonafide": len(values),
                "flagged": float(np.mean(held < threshold)),
            }
        out[channel] = section
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, action="append", required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--min-s",
        type=float,
        default=0.0,
        help="only clips at least this long (duration_s), e.g. 4: one whole window",
    )
    args = parser.parse_args()
    result = report(args.scores, args.manifest, args.min_s)
    for channel, section in result.items():
        print(f"== {channel}")
        for name, row in section.items():
            n = row.get("spoof", row.get("bonafide"))
            flagged = f"  flagged {row['flagged'] * 100:5.1f} %" if "flagged" in row else ""
            print(f"  {name:<40} EER {row['eer'] * 100:6.2f} %  ({n:.0f} clips){flagged}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
