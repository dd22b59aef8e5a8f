"""Does fine-tuning Whisper's lower layers beat the frozen encoder on unseen sources?

Leave-one-source-out on packed log-mels (research/finetune_pack.py), same folds as
``spoofwatch loso``: for each source, (1) the frozen 4-layer Whisper base + logistic
regression head (C as the shipped card), (2) the encoder fine-tuned on the other sources
(head initialised from (1), both channels, SpecAugment-style masks applied to both
classes), then a fresh logistic head on its features, and (3) the jointly trained head
itself. Window scores are averaged per clip and pooled over folds into one EER per channel.
Items packed as ``extra`` (finetune_pack.py --extra-manifest: vocoder copies of the bona
fide clips) train every fold whose held-out source is not theirs and are never scored; with
them, (4) the frozen head fitted without them is reported too.
Needs a GPU to finish in minutes (a CPU works, slowly).

    python research/finetune_pack.py --manifest ../shared/corpus/manifest.csv --out .ftdata
    python research/finetune_loso.py --data .ftdata --out results --final

Results (README, Accuracy, "Fine-tuning the encoder"): no gain on clean, 0.6 points on
the telephone channel, dev worse; with the FARGAN copies, the fresh logistic head on tuned
features 0.6 points worse than frozen (clean, 4 s), the joint head 1.0 better; not adopted.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from spoofwatch.model.pooling import mean_std_pool
from spoofwatch.train.metrics import compute_eer

FRAMES = 400  # 4 s windows
HOP = 200  # 2 s hop, as loso
RANGE = 10.0
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def load_xz(path: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as data:
        return {k: data[k] for k in data.files}


class Mels:
    """One channel's per-clip quantised raw log-mels, on the device, cut into windows."""

    def __init__(self, packed: dict[str, np.ndarray], device: torch.device) -> None:
        self.q = torch.from_numpy(packed["mel"]).to(device)  # (80, T) uint8
        lengths = packed["lengths"]
        self.lengths = torch.from_numpy(lengths).to(device)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])).to(device)
        self.peaks = torch.from_numpy(packed["peaks"]).to(device)
        self.ar = torch.arange(FRAMES, device=device)

    def windows(self, clips: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """(B,) clip indices and start frames → (B, 80, 400) Whisper-normalised log-mels;
        clips shorter than a window are tiled, as the product tiles their audio."""
        length = self.lengths[clips][:, None]
        idx = self.offsets[clips][:, None] + (starts[:, None] + self.ar[None]) % length
        raw = self.q[:, idx].permute(1, 0, 2).float() / 255.0 * RANGE
        raw = raw + (self.peaks[clips] - RANGE)[:, None, None]
        peak = raw.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(raw, peak - 8.0) + 4.0) / 4.0

    def eval_windows(self) -> tuple[np.ndarray, np.ndarray]:
        clips, starts = [], []
        for i, n in enumerate(self.lengths.tolist()):
            s = list(range(0, max(n - FRAMES, 0) + 1, HOP))
            clips += [i] * len(s)
            starts += s
        return np.array(clips), np.array(starts)


def build_encoder(data: Path, device: torch.device) -> WhisperEncoder:
    arch = json.loads((data / "arch.json").read_text())
    config = WhisperConfig(
        d_model=arch["d_model"],
        encoder_layers=arch["encoder_layers"],
        encoder_attention_heads=arch["encoder_attention_heads"],
        encoder_ffn_dim=arch["encoder_ffn_dim"],
        num_mel_bins=arch["num_mel_bins"],
        max_source_positions=arch["max_source_positions"],
        activation_function="gelu",
    )
    config._attn_implementation = "sdpa"
    encoder = WhisperEncoder(config)
    packed = np.load(data / "encoder.npz")
    state = {}
    for key in packed.files:
        if key.endswith(".q"):
            state[key[:-2]] = torch.from_numpy(packed[key].astype(np.float32) * packed[key[:-2] + ".s"])
        elif not key.endswith(".s"):
            state[key] = torch.from_numpy(packed[key].astype(np.float32))
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    assert (
        not [m for m in missing if not m.endswith("k_proj.bias") and not m.startswith("layer_norm.")]
        and not unexpected
    ), (missing, unexpected)
    encoder.layer_norm = nn.Identity()  # type: ignore[assignment]  # truncated stack, as the product
    return encoder.to(device)


def pooled(encoder: WhisperEncoder, mel: torch.Tensor) -> torch.Tensor:
    states = encoder(mel, output_hidden_states=True).hidden_states
    return mean_std_pool(states, list(range(len(states))))


@torch.no_grad()
def features(
    encoder: WhisperEncoder, mels: Mels, clips: np.ndarray, starts: np.ndarray, batch: int = 256
) -> torch.Tensor:
    encoder.eval()
    out = []
    dev = mels.q.device
    for i in range(0, len(clips), batch):
        c = torch.from_numpy(clips[i : i + batch]).to(dev)
        s = torch.from_numpy(starts[i : i + batch]).to(dev)
        out.append(pooled(encoder, mels.windows(c, s)).float())
    return torch.cat(out)


def fit_lr(
    x: torch.Tensor, y: torch.Tensor, C: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's LogisticRegression(C, class_weight='balanced') on standardised features:
    0.5 |w|^2 + C sum_i sw_i logloss_i, intercept unpenalised (same convex optimum)."""
    x = x.double()
    mean = x.mean(0)
    scale = x.std(0, unbiased=False)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    yf = y.double()
    n1 = yf.sum()
    n0 = len(yf) - n1
    sw = torch.where(y == 1, len(yf) / (2 * n1), len(yf) / (2 * n0))
    sign = 2 * yf - 1
    w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-8,
        tolerance_change=1e-12,
        history_size=30,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logit = z @ w[:-1] + w[-1]
        loss = C * (sw * nn.functional.softplus(-sign * logit)).sum() + 0.5 * w[:-1].square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach()
    return mean.float(), scale.float(), w[:-1].float(), w[-1].float()


def lr_scores(head: tuple[torch.Tensor, ...], x: torch.Tensor) -> np.ndarray:
    mean, scale, coef, bias = head
    return (((x - mean) / scale) @ coef + bias).double().cpu().numpy()


class Tuned(nn.Module):
    def __init__(self, encoder: WhisperEncoder, head: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        mean, scale, coef, bias = head
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale", scale.clone())
        self.linear = nn.Linear(len(coef), 1)
        with torch.no_grad():
            self.linear.weight.copy_(coef[None])
            self.linear.bias.copy_(bias.reshape(1))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.linear((pooled(self.encoder, mel) - self.mean) / self.scale)[:, 0]


def spec_augment(mel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One frequency mask (≤ 8 bins) and one time mask (≤ 40 frames) per window, each with
    probability 0.5, filled with the window's floor; the same for both classes."""
    b = mel.shape[0]
    dev = mel.device
    floor = mel.amin(dim=(1, 2), keepdim=True)
    f0 = torch.randint(0, 72, (b, 1, 1), device=dev, generator=gen)
    fw = torch.randint(0, 9, (b, 1, 1), device=dev, generator=gen)
    t0 = torch.randint(0, 360, (b, 1, 1), device=dev, generator=gen)
    tw = torch.randint(0, 41, (b, 1, 1), device=dev, generator=gen)
    use_f = torch.rand((b, 1, 1), device=dev, generator=gen) < 0.5
    use_t = torch.rand((b, 1, 1), device=dev, generator=gen) < 0.5
    fi = torch.arange(80, device=dev)[None, :, None]
    ti = torch.arange(FRAMES, device=dev)[None, None, :]
    mask = (use_f & (fi >= f0) & (fi < f0 + fw)) | (use_t & (ti >= t0) & (ti < t0 + tw))
    return torch.where(mask, floor, mel)


def fine_tune(
    data: Path,
    channels: list[Mels],
    labels: np.ndarray,
    train_clips: np.ndarray,
    head: tuple[torch.Tensor, ...],
    args: argparse.Namespace,
    seed: int,
) -> Tuned:
    dev = channels[0].q.device
    model = Tuned(build_encoder(data, dev), head).to(dev)
    model.encoder.train()
    # dropout is 0 in Whisper's config; train() only matters for consistency
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    bona = torch.from_numpy(train_clips[labels[train_clips] == 1]).to(dev)
    spoof = torch.from_numpy(train_clips[labels[train_clips] == 0]).to(dev)
    params = [
        {"params": model.encoder.parameters(), "lr": args.lr},
        {"params": model.linear.parameters(), "lr": args.head_lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=args.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    half = args.batch // 2
    for step in range(args.steps):
        frac = step / args.steps
        warm = min(1.0, (step + 1) / max(1, args.steps // 10))
        for g, lr in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * frac))
        clips = torch.cat(
            [
                bona[torch.randint(0, len(bona), (half,), device=dev, generator=gen)],
                spoof[torch.randint(0, len(spoof), (half,), device=dev, generator=gen)],
            ]
        )
        y = torch.cat([torch.ones(half, device=dev), torch.zeros(half, device=dev)])
        ch = torch.randint(0, len(channels), (len(clips),), device=dev, generator=gen)
        mel = torch.empty(len(clips), 80, FRAMES, device=dev)
        for k, m in enumerate(channels):
            sel = ch == k
            if sel.any():
                c = clips[sel]
                room = (m.lengths[c] - FRAMES).clamp(min=0) + 1
                s = (torch.rand(len(c), device=dev, generator=gen) * room).long()
                mel[sel] = m.windows(c, s)
        mel = spec_augment(mel, gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logit = model(mel).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return model


def clip_mean(window_scores: np.ndarray, clips: np.ndarray, n: int) -> np.ndarray:
    sums = np.bincount(clips, weights=window_scores, minlength=n)
    counts = np.bincount(clips, minlength=n)
    out = np.full(n, np.nan)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def eer(scores: np.ndarray, labels: np.ndarray) -> float:
    ok = ~np.isnan(scores)
    return float(compute_eer(scores[ok & (labels == 1)], scores[ok & (labels == 0)])[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--C", type=float, default=0.001)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--head-lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--folds", default="all", help="comma-separated source names, or all")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting folds after this")
    ap.add_argument("--final", action="store_true", help="also fine-tune on the train split, save weights")
    ap.add_argument("--clip-limit", type=int, default=0, help="debug: use only this many clips")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    b = args.data
    items = json.loads((b / "items.json").read_text())
    names, packs = [], []
    for name in ("clean", "telephone"):
        if (b / f"mel_{name}.npz.xz").is_file():
            names.append(name)
            packs.append(load_xz(b / f"mel_{name}.npz.xz"))
    log(f"channels found: {names}")
    if args.clip_limit:
        keep = np.random.default_rng(0).choice(len(items), args.clip_limit, replace=False)
        keep.sort()
        items = [items[i] for i in keep]
        for p in packs:
            offs = np.concatenate([[0], np.cumsum(p["lengths"])])
            p["mel"] = np.concatenate([p["mel"][:, offs[i] : offs[i + 1]] for i in keep], axis=1)
            p["lengths"] = p["lengths"][keep]
            p["peaks"] = p["peaks"][keep]
    channels = [Mels(p, dev) for p in packs]
    n = len(items)
    labels = np.array([1 if it["label"] == "bonafide" else 0 for it in items])
    sources = np.array([it["source"] for it in items])
    splits = np.array([it["split"] for it in items])
    is_extra = np.array([bool(it.get("extra", False)) for it in items])
    log(f"{n} clips, channels {names}, device {dev}")
    frozen = build_encoder(b, dev)
    wins = [m.eval_windows() for m in channels]
    frozen_feats = [features(frozen, m, c, s) for m, (c, s) in zip(channels, wins, strict=True)]
    log(f"frozen features: {[tuple(f.shape) for f in frozen_feats]}")
    del frozen
    folds = sorted(set(sources.tolist())) if args.folds == "all" else args.folds.split(",")
    methods = ("frozen_lr", "tuned_lr", "tuned_joint") + (("frozen_lr_no_extra",) if is_extra.any() else ())
    window_scores = {
        (m, ch): np.full(len(w[0]), np.nan) for m in methods for ch, w in zip(names, wins, strict=True)
    }
    fold_log = []
    results: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}, "channels": names}

    def train_rows(mask_clips: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        rows = [torch.from_numpy(mask_clips[c]).to(dev) for c, _ in wins]
        y = torch.cat([torch.from_numpy(labels[c][mask_clips[c]]).to(dev) for c, _ in wins])
        return rows, y

    def summarise() -> None:
        pooled_eer: dict[str, dict[str, float]] = {}
        per_source: dict[str, dict[str, dict[str, float]]] = {}
        for (m, ch), ws in window_scores.items():
            c = wins[names.index(ch)][0]
            clip = clip_mean(np.nan_to_num(ws, nan=0.0), c, n)
            scored = np.zeros(n, bool)
            scored[np.unique(c[~np.isnan(ws)])] = True
            scored &= ~is_extra
            clip[~scored] = np.nan
            if scored.any() and len(set(labels[scored].tolist())) == 2:
                pooled_eer.setdefault(m, {})[ch] = eer(clip, labels)
                bona = clip[scored & (labels == 1)]
                per_source.setdefault(m, {})[ch] = {
                    s: float(compute_eer(bona, clip[scored & (labels == 0) & (sources == s)])[0])
                    for s in folds
                    if (scored & (labels == 0) & (sources == s)).any()
                }
        results.update(pooled_eer=pooled_eer, per_source=per_source, folds=fold_log)
        (args.out / "loso.json").write_text(json.dumps(results, indent=1))

    for k, name in enumerate(folds):
        if time.time() - T0 > args.budget_s:
            log(f"budget reached: {len(fold_log)} of {len(folds)} folds done")
            break
        held = sources == name
        train_mask = ~held
        if len(set(labels[train_mask].tolist())) < 2:
            continue
        rows, y = train_rows(train_mask)
        x = torch.cat([f[r] for f, r in zip(frozen_feats, rows, strict=True)])
        head = fit_lr(x, y, args.C)
        for ch, f, (c, _) in zip(names, frozen_feats, wins, strict=True):
            sel = held[c]
            window_scores[("frozen_lr", ch)][sel] = lr_scores(head, f[torch.from_numpy(sel).to(dev)])
        if is_extra.any():
            rows0, y0 = train_rows(train_mask & ~is_extra)
            head0 = fit_lr(torch.cat([f[r] for f, r in zip(frozen_feats, rows0, strict=True)]), y0, args.C)
            for ch, f, (c, _) in zip(names, frozen_feats, wins, strict=True):
                sel = held[c]
                window_scores[("frozen_lr_no_extra", ch)][sel] = lr_scores(
                    head0, f[torch.from_numpy(sel).to(dev)]
                )
        model = fine_tune(b, channels, labels, np.flatnonzero(train_mask), head, args, seed=k)
        tuned_feats = [features(model.encoder, m, c, s) for m, (c, s) in zip(channels, wins, strict=True)]
        head2 = fit_lr(torch.cat([f[r] for f, r in zip(tuned_feats, rows, strict=True)]), y, args.C)
        for ch, f, (c, _) in zip(names, tuned_feats, wins, strict=True):
            sel = torch.from_numpy(held[c]).to(dev)
            window_scores[("tuned_lr", ch)][held[c]] = lr_scores(head2, f[sel])
            with torch.no_grad():
                joint = model.linear((f[sel] - model.mean) / model.scale)[:, 0]
            window_scores[("tuned_joint", ch)][held[c]] = joint.double().cpu().numpy()
        fold_log.append(name)
        del model, tuned_feats
        summarise()
        log(f"fold {k + 1}/{len(folds)} {name}: {json.dumps(results['pooled_eer'])}")
    summarise()
    log("LOSO " + json.dumps(results["pooled_eer"]))

    if args.final:
        train_mask = splits == "train"
        dev_mask = (splits == "dev") & ~is_extra
        rows, y = train_rows(train_mask)
        head = fit_lr(torch.cat([f[r] for f, r in zip(frozen_feats, rows, strict=True)]), y, args.C)
        model = fine_tune(b, channels, labels, np.flatnonzero(train_mask), head, args, seed=1234)
        tuned_feats = [features(model.encoder, m, c, s) for m, (c, s) in zip(channels, wins, strict=True)]
        head2 = fit_lr(torch.cat([f[r] for f, r in zip(tuned_feats, rows, strict=True)]), y, args.C)
        dev_eer: dict[str, dict[str, float]] = {}
        for ch, ff, tf, (c, _) in zip(names, frozen_feats, tuned_feats, wins, strict=True):
            for m, hd, f in (("frozen_lr", head, ff), ("tuned_lr", head2, tf)):
                clip = clip_mean(lr_scores(hd, f), c, n)
                clip[~dev_mask] = np.nan
                dev_eer.setdefault(m, {})[ch] = eer(clip, labels)
        results["dev_eer_final"] = dev_eer
        log("dev (train split only) " + json.dumps(dev_eer))
        state = {k: v.detach().half().cpu() for k, v in model.encoder.state_dict().items()}
        keys = sorted(state)
        half_keys = [k for k in keys if k.startswith("layers.0.") or k.startswith("layers.1.")]
        rest = [k for k in keys if k not in half_keys]
        from safetensors.torch import save_file

        save_file({k: state[k] for k in half_keys}, str(args.out / "tuned_a.safetensors"))
        save_file({k: state[k] for k in rest}, str(args.out / "tuned_b.safetensors"))
        summarise()
    log("done")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
