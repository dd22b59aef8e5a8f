"""Pack the corpus as quantised Whisper log-mels (and the encoder weights) for a GPU box.

The fine-tuning experiment (research/finetune_loso.py) runs where neither the corpus nor
the pinned Whisper weights exist and only ~60 MB may travel. So: per clip, the raw log10
mel of the clean and of the G.711 telephone channel, quantised to uint8 over the clip's
top 10 decades of dynamic range (0.4 dB steps; Whisper itself clamps each window to 8), lzma
compressed; and the 4-layer Whisper base encoder as float16 + per-row int8 linear weights.

    python research/finetune_pack.py --manifest ../shared/corpus/manifest.csv --out .ftdata \
        --channels telephone                # 58 MB
    python research/finetune_pack.py ... --channels clean --max-s 6   # 61 MB: clips cut to 6 s
    python research/finetune_pack.py ... --channels clean --max-s 4 \
        --extra-manifest C/manifest.csv     # with the FARGAN copies (training only): 64 MB

Items of ``--extra-manifest`` (e.g. `spoofwatch copysynth`'s copies) are packed after the
corpus's, marked ``extra``: finetune_loso.py trains on them where their source is not held
out and never scores them, as ``spoofwatch loso --extra-manifest`` does.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spoofwatch.audio.files import load_audio
from spoofwatch.model.encoders.mel import WhisperLogMel
from spoofwatch.model.encoders.whisper_ct2 import WhisperCt2Encoder
from spoofwatch.train.channel import get_channel
from spoofwatch.train.corpus import read_manifest
from spoofwatch.train.validate import fold_key

RANGE = 10.0


def raw_log_mel(front: WhisperLogMel, samples: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return front.log10_mel(torch.from_numpy(samples)[None])[0].numpy()


def save_xz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(lzma.compress(buf.getvalue(), preset=6))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--channels", default="telephone", help="comma-separated: clean, telephone")
    ap.add_argument("--max-s", type=float, default=0.0, help="keep only the first seconds of each clip")
    ap.add_argument(
        "--extra-manifest", help="training-only items (e.g. vocoder copies), packed after the corpus"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    max_frames = round(args.max_s * 100) if args.max_s > 0 else None
    corpus = read_manifest(args.manifest)
    extras = read_manifest(args.extra_manifest) if args.extra_manifest else []
    items = [*corpus, *extras]
    table = [
        {
            "utt_id": it.utt_id,
            "label": it.label,
            "source": fold_key(it),
            "split": it.split,
            "system": it.system,
            "extra": k >= len(corpus),
        }
        for k, it in enumerate(items)
    ]
    (out / "items.json").write_text(json.dumps(table))
    front = WhisperLogMel(80)
    channels: dict[str, list[tuple[np.ndarray, float]]] = {c: [] for c in args.channels.split(",")}
    for it in tqdm(items, desc="mel"):
        audio = load_audio(it.path, 16000).samples
        for name, chunks in channels.items():
            lm = raw_log_mel(front, get_channel(name)(audio, 16000))[:, :max_frames]
            peak = float(lm.max())
            q = np.round((np.maximum(lm, peak - RANGE) - (peak - RANGE)) / RANGE * 255).astype(np.uint8)
            chunks.append((q, peak))
    for name, chunks in channels.items():
        lengths = np.array([q.shape[1] for q, _ in chunks], dtype=np.int64)
        save_xz(
            out / f"mel_{name}.npz.xz",
            mel=np.concatenate([q for q, _ in chunks], axis=1),
            lengths=lengths,
            peaks=np.array([p for _, p in chunks], dtype=np.float32),
        )
    encoder = WhisperCt2Encoder("whisper-base", 4.0, layers=4).encoder
    state: dict[str, np.ndarray] = {}
    for key, tensor in encoder.state_dict().items():
        t = tensor.float()
        if t.ndim == 2 and key.startswith("layers."):
            scale = t.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            state[key + ".q"] = torch.round(t / scale).to(torch.int8).numpy()
            state[key + ".s"] = scale.numpy()
        else:
            state[key] = t.half().numpy()
    np.savez_compressed(out / "encoder.npz", **state)
    cfg = encoder.config
    arch = {
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "encoder_attention_heads": cfg.encoder_attention_heads,
        "encoder_ffn_dim": cfg.encoder_ffn_dim,
        "num_mel_bins": cfg.num_mel_bins,
        "max_source_positions": cfg.max_source_positions,
    }
    (out / "arch.json").write_text(json.dumps(arch))


if __name__ == "__main__":
    main()
