"""Per-pixel heads, both trained on the training labels only.

- ``forest`` (default): a Random Forest on [diffusion features ‖ pixel bands] (``ForestHead``; the most
  accurate head measured, BENCHMARKS.md); out-of-bag predictions are its validation report.
- ``mlp`` (UniDiff): fusion over feature groups, then UniDiff's MLP head; a stratified validation split of the
  TRAINING labels (the reference validated on test pixels), early stopping and best-weight restore.

Fusions (``group_sizes`` splits the input; the last group may be the raw spectrum):
- ``concat`` (UniDiff): standardised concatenation straight into the MLP.
- ``global`` (SatDiFuser global-weighted): each group through a bottleneck Linear(C_g→96)→GroupNorm→
  Linear(96→D); F = Σ_k softmax(w)_k · B_k(f_k), one learned weight per group.
- ``local`` (localized-weighted): Z_k = B_k(f_k); per-pixel α = softmax_k(Linear(mean_k Z)/τ); F = Σ α_k Z_k.
- ``moe`` (mixture of experts, E=8): experts Linear(ΣC→D)+ReLU on the concatenated bottleneck outputs,
  per-pixel gate Linear(·→E)/τ; dense softmax for the warm-up epochs, then top-2. SatDiFuser's gate is
  GAP(Conv3×3) over a feature map; this head sees single pixel vectors, so the gate is per pixel.
Input standardisation (mean/std per dimension of the training split) is stored in the state dict.
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..assessment.metrics import classification_metrics
from ..networks.device import seeded
from ..progress import Progress
from ..settings import FUSIONS, HEAD_KINDS, HeadSettings



def _bottleneck(c_in: int, proj: int, d: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, proj), nn.GroupNorm(8 if proj % 8 == 0 else 1, proj), nn.ReLU(),
                         nn.Linear(proj, d))


class PixelHead(nn.Module):
    def __init__(self, group_sizes: Sequence[int], n_classes: int, fusion: str = "concat",
                 hidden: Sequence[int] = (128,), proj_dim: int = 96, fused_dim: int = 128, n_experts: int = 8,
                 tau: float = 1.0):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: use one of {FUSIONS}")
        self.group_sizes = [int(g) for g in group_sizes]
        if not self.group_sizes or min(self.group_sizes) <= 0:
            raise ValueError(f"group_sizes must be positive, got {self.group_sizes}")
        self.fusion, self.tau = fusion, float(tau)
        dim = sum(self.group_sizes)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("moe_topk", torch.tensor(0))  # 0 = dense gate (warm-up), k = top-k
        if fusion == "concat":
            d = dim
        elif fusion in ("global", "local"):
            d = fused_dim
            self.branches = nn.ModuleList(_bottleneck(g, proj_dim, d) for g in self.group_sizes)
            if fusion == "global":
                self.weights = nn.Parameter(torch.zeros(len(self.group_sizes)))
            else:
                self.alpha = nn.Linear(d, len(self.group_sizes))
        else:
            d = fused_dim
            self.branches = nn.ModuleList(
                nn.Sequential(nn.Linear(g, proj_dim), nn.GroupNorm(8 if proj_dim % 8 == 0 else 1, proj_dim),
                              nn.ReLU()) for g in self.group_sizes)
            cat = proj_dim * len(self.group_sizes)
            self.experts = nn.ModuleList(nn.Sequential(nn.Linear(cat, d), nn.ReLU()) for _ in range(n_experts))
            self.gate = nn.Linear(cat, n_experts)
        layers: List[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU(), nn.BatchNorm1d(int(h))]
            d = int(h)
        layers.append(nn.Linear(d, int(n_classes)))
        self.mlp = nn.Sequential(*layers)

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.fusion == "concat":
            return x
        parts = torch.split(x, self.group_sizes, dim=1)
        z = [branch(p) for branch, p in zip(self.branches, parts)]
        if self.fusion == "global":
            w = torch.softmax(self.weights, dim=0)
            return sum(w[k] * z[k] for k in range(len(z)))
        if self.fusion == "local":
            stack = torch.stack(z, dim=1)  # [N, K, D]
            alpha = torch.softmax(self.alpha(stack.mean(dim=1)) / self.tau, dim=1)
            return (alpha.unsqueeze(-1) * stack).sum(dim=1)
        cat = torch.cat(z, dim=1)
        logits = self.gate(cat) / self.tau
        k = int(self.moe_topk)
        if k > 0 and k < logits.shape[1]:
            top = logits.topk(k, dim=1)
            gate = torch.zeros_like(logits).scatter(1, top.indices, torch.softmax(top.values, dim=1))
        else:
            gate = torch.softmax(logits, dim=1)
        experts = torch.stack([e(cat) for e in self.experts], dim=1)  # [N, E, D]
        return (gate.unsqueeze(-1) * experts).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.fuse(x))


class _Head:
    """What every head shares: input check, batched class probabilities, argmax."""

    config: Dict
    n_classes: int

    def _proba(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray, batch: int = 65536) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != sum(self.config["group_sizes"]):
            raise ValueError(f"head expects [N, {sum(self.config['group_sizes'])}] inputs, got {x.shape}")
        out = np.empty((x.shape[0], self.n_classes), np.float32)
        for s in range(0, x.shape[0], batch):
            out[s:s + batch] = self._proba(x[s:s + batch])
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)


class TrainedHead(_Head):
    """A trained :class:`PixelHead` on the CPU with its training record."""

    def __init__(self, module: PixelHead, config: Dict, history: Optional[List[Dict]] = None,
                 val_metrics: Optional[Dict] = None):
        self.module = module.cpu().eval()
        self.config = config
        self.history = history or []
        self.val_metrics = val_metrics
        self.n_classes = int(config["n_classes"])

    def _proba(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(self.module(torch.from_numpy(x)).float(), dim=1).numpy()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}


def _build(config: Dict) -> PixelHead:
    return PixelHead(config["group_sizes"], config["n_classes"], config["fusion"], tuple(config["hidden"]),
                     config["proj_dim"], config["fused_dim"], config["n_experts"], config["tau"])


class ForestHead(_Head):
    """A Random Forest head (``engine.heads.forest``) behind the same interface as :class:`TrainedHead`."""

    def __init__(self, forest, config: Dict, val_metrics: Optional[Dict] = None):
        self.forest = forest
        self.config = config
        self.val_metrics = val_metrics
        self.n_classes = int(config["n_classes"])

    def _proba(self, x: np.ndarray) -> np.ndarray:
        return self.forest.predict_proba(x)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {f"forest.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.forest.arrays().items()}


def _training_arrays(x, y, group_sizes: Sequence[int], n_classes: Optional[int]):
    """Training inputs of either head as (x float32 [N, D], y int64 [N], class count), or a clear error."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"train_head: x must be [N, D] and y [N], got {x.shape} and {y.shape}")
    if sum(group_sizes) != x.shape[1]:
        raise ValueError(f"group sizes {list(group_sizes)} sum to {sum(group_sizes)}, features have {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError("training features contain NaN/inf: labelled pixels must lie on valid data")
    k = int(n_classes or (y.max() + 1))
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"class indices must be in 0..{k - 1}")
    return x, y, k


def train_forest_head(x: np.ndarray, y: np.ndarray, group_sizes: Sequence[int], settings: HeadSettings, *,
                      seed: int, n_classes: Optional[int] = None, spectrum_last: bool = False,
                      progress: Optional[Progress] = None) -> ForestHead:
    """Every labelled pixel trains the forest; out-of-bag predictions are the validation report.

    With ``spectrum_last`` (the last column group is the pixel's bands) and ``settings.feature_check_p`` > 0,
    a second forest on the bands alone is grown and kept when its out-of-bag predictions are significantly
    better: diffusion features that hurt on the user's own labels are dropped, never silently kept.
    """
    from .forest import shift_features, sign_test_greater, train_forest

    progress = progress or Progress()
    x, y, k = _training_arrays(x, y, group_sizes, n_classes)
    check = bool(spectrum_last and len(group_sizes) >= 2 and settings.feature_check_p > 0)
    forest = train_forest(x, y, k, n_trees=settings.trees, seed=seed, balanced=settings.class_weighting,
                          progress=progress.sub(0.0, 0.5) if check else progress)
    feature_check = None
    if check:
        offset = int(sum(group_sizes[:-1]))
        bands = train_forest(x[:, offset:], y, k, n_trees=settings.trees, seed=seed,
                             balanced=settings.class_weighting, progress=progress.sub(0.5, 1.0))
        both = ~np.isnan(forest.oob_proba).any(axis=1) & ~np.isnan(bands.oob_proba).any(axis=1)
        right_f = forest.oob_proba[both].argmax(axis=1) == y[both]
        right_b = bands.oob_proba[both].argmax(axis=1) == y[both]
        wins, losses = int((right_b & ~right_f).sum()), int((right_f & ~right_b).sum())
        feature_check = {"bands_only_right": wins, "features_right": losses, "rule": settings.feature_check_rule}
        if settings.feature_check_rule == "sign":
            p = sign_test_greater(wins, losses)
            use_features = not (wins > losses and p < settings.feature_check_p)
            feature_check.update(p_value=round(p, 4), threshold=settings.feature_check_p)
            why = f"(p = {p:.3f})"
        elif settings.feature_check_rule in ("one-se", "best"):
            from .selection import select_simplest

            options = [("bands only", right_b), ("bands + features", right_f)]
            if settings.feature_check_prefers == "features":
                options.reverse()
            elif settings.feature_check_prefers != "bands":
                raise ValueError(f"feature_check_prefers must be features or bands, got {settings.feature_check_prefers!r}")
            choice = select_simplest(np.stack([r for _, r in options]).astype(float), y[both],
                                     [name for name, _ in options], rule=settings.feature_check_rule)
            use_features = options[choice.chosen][0] == "bands + features"
            feature_check["selection"] = choice.to_dict()
            why = f"({choice.describe()})"
        else:
            raise ValueError(f"unknown feature check rule {settings.feature_check_rule!r}: use one-se, best or sign")
        feature_check["diffusion_features_used"] = use_features
        progress.log(f"Diffusion-feature check (out-of-bag, training labels): the bands-only forest is right "
                     f"where the forest with diffusion features is wrong on {wins} pixels, the reverse on {losses} "
                     f"{why}: " + ("keeping the diffusion features." if use_features else
                                   "using the bands alone (the features did not help on these labels)."))
        if not use_features:
            forest = shift_features(bands, offset, x.shape[1])
    config = {"kind": "forest", "group_sizes": [int(g) for g in group_sizes], "n_classes": k,
              "n_features": int(x.shape[1]), "trees": int(settings.trees), "seed": int(seed),
              "settings": asdict(settings), "n_train": int(x.shape[0]), "n_val": 0,
              "nodes": int(forest.left.size), "feature_check": feature_check}
    val = None
    ok = ~np.isnan(forest.oob_proba).any(axis=1)
    if ok.any():
        val = classification_metrics(y[ok], forest.oob_proba[ok].argmax(axis=1), k)
        config["n_val"] = int(ok.sum())
        progress.log(f"Head (Random Forest, {settings.trees} trees): out-of-bag OA {val['overall_accuracy']:.3f} "
                     f"on {int(ok.sum())} training-label pixels")
    return ForestHead(forest, config, val)


def with_forest(head: ForestHead, forest, first: int, y: np.ndarray, extra: Dict) -> ForestHead:
    """``head`` with another forest grown on the columns ``first:`` of its inputs (self-training): the same
    configuration, the forest shifted to read the full input, validation from the out-of-bag predictions of the
    real training labels (the first ``len(y)`` rows it was grown on)."""
    from .forest import shift_features

    n_features = int(head.config["n_features"])
    if first:
        forest = shift_features(forest, first, n_features)
    config = {**head.config, "nodes": int(forest.left.size), "self_training": dict(extra)}
    val = head.val_metrics
    oob = forest.oob_proba[:len(y)] if forest.oob_proba is not None else None
    if oob is not None:
        ok = ~np.isnan(oob).any(axis=1)
        if ok.any():
            val = classification_metrics(y[ok], oob[ok].argmax(axis=1), head.n_classes)
            config["n_val"] = int(ok.sum())
    return ForestHead(forest, config, val)


def fit_head(x: np.ndarray, y: np.ndarray, group_sizes: Sequence[int], settings: HeadSettings, *, seed: int,
             n_classes: Optional[int] = None, fusion: Optional[str] = None, device="cpu",
             spectrum_last: bool = False, progress: Optional[Progress] = None):
    """The head ``settings.kind`` asks for: ``forest`` or the MLP with ``fusion``."""
    kind = settings.kind
    if kind == "forest":
        return train_forest_head(x, y, group_sizes, settings, seed=seed, n_classes=n_classes,
                                 spectrum_last=spectrum_last, progress=progress)
    if kind != "mlp":
        raise ValueError(f"unknown head kind {kind!r}: use one of {HEAD_KINDS}")
    return train_head(x, y, group_sizes, settings, seed=seed, device=device, progress=progress, fusion=fusion,
                      n_classes=n_classes)


def load_head(config: Dict, state_dict: Dict[str, torch.Tensor]):
    if config.get("kind") == "forest":
        from .forest import Forest

        arrays = {k[len("forest."):]: v.numpy() for k, v in state_dict.items() if k.startswith("forest.")}
        try:
            forest = Forest(arrays, config["n_features"], config["n_classes"])
        except ValueError as exc:
            raise ValueError(f"the stored forest head is damaged: {exc}") from exc
        return ForestHead(forest, config)
    with seeded(0):  # its weights come from the file; the draws of the build must not move torch's generator
        module = _build(config)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the stored head weights do not fit its configuration ({config.get('fusion')}, "
                         f"groups {config.get('group_sizes')}): {exc}") from exc
    return TrainedHead(module, config)


def stratified_split(y: np.ndarray, val_fraction: float, seed: int):
    """(train_idx, val_idx): per class round(n·f) validation samples, always ≥ 1 left for training."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        n_val = min(max(n_val, 1 if val_fraction > 0 and len(idx) > 1 else 0), len(idx) - 1)
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def train_head(x: np.ndarray, y: np.ndarray, group_sizes: Sequence[int], settings: HeadSettings, *, seed: int,
               device="cpu", progress: Optional[Progress] = None, fusion: Optional[str] = None,
               n_classes: Optional[int] = None, fused_dim: int = 128, proj_dim: int = 96, n_experts: int = 8,
               tau: float = 1.0, moe_warmup: int = 10) -> TrainedHead:
    """Train the head; ``fusion`` defaults to ``getattr(settings, "fusion", "concat")``.

    On the CPU the head trains single-threaded: its matrices are tiny, and with the machine shared, intra-op
    threads wait on each other (measured 10-80x slower under load with 2 threads).
    """
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        return _train_head(x, y, group_sizes, settings, seed=seed, device=device, progress=progress,
                           fusion=fusion, n_classes=n_classes, fused_dim=fused_dim, proj_dim=proj_dim,
                           n_experts=n_experts, tau=tau, moe_warmup=moe_warmup)
    finally:
        torch.set_num_threads(threads)


def _train_head(x, y, group_sizes, settings, *, seed, device, progress, fusion, n_classes, fused_dim, proj_dim,
                n_experts, tau, moe_warmup) -> TrainedHead:
    progress = progress or Progress()
    fusion = fusion or getattr(settings, "fusion", "concat")
    x, y, k = _training_arrays(x, y, group_sizes, n_classes)
    tr, va = stratified_split(y, settings.val_fraction, seed)
    if tr.size < 2:
        raise ValueError("need at least 2 labelled pixels to train the head")
    device = torch.device(device)
    config = {"group_sizes": [int(g) for g in group_sizes], "n_classes": k, "fusion": fusion,
              "hidden": [int(h) for h in settings.hidden], "proj_dim": proj_dim, "fused_dim": fused_dim,
              "n_experts": n_experts, "tau": tau, "moe_warmup": moe_warmup, "seed": int(seed),
              "settings": asdict(settings), "n_train": int(tr.size), "n_val": int(va.size)}
    gen = torch.Generator().manual_seed(int(seed))
    with seeded(int(seed), exclusive=True):
        module = _build(config)
    mean = x[tr].mean(axis=0)
    std = x[tr].std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    module.mean.copy_(torch.from_numpy(mean))
    module.std.copy_(torch.from_numpy(std.astype(np.float32)))
    module.to(device)
    xt, yt = torch.from_numpy(x[tr]).to(device), torch.from_numpy(y[tr]).to(device)
    xv, yv = torch.from_numpy(x[va]).to(device), torch.from_numpy(y[va]).to(device)
    weight = None
    if settings.class_weighting:
        counts = np.bincount(y[tr], minlength=k).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    opt = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    bs = max(2, int(settings.batch_size))
    best_key, best_state, best_epoch, bad = None, None, 0, 0
    history: List[Dict] = []
    for epoch in range(int(settings.max_epochs)):
        if fusion == "moe":
            module.moe_topk.fill_(0 if epoch < moe_warmup else 2)
        module.train()
        perm = torch.randperm(tr.size, generator=gen).to(device)
        total, seen = 0.0, 0
        for s in range(0, tr.size, bs):
            idx = perm[s:s + bs]
            if idx.numel() < 2:  # BatchNorm cannot train on one sample
                continue
            loss = F.cross_entropy(module(xt[idx]), yt[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            seen += idx.numel()
        module.eval()
        rec = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        with torch.no_grad():
            if va.size:
                logits = module(xv)
                rec["val_loss"] = float(F.cross_entropy(logits, yv, weight=weight))
                rec["val_accuracy"] = float((logits.argmax(1) == yv).float().mean())
                key = (rec["val_accuracy"], -rec["val_loss"])
            else:
                key = (0.0, -rec["train_loss"])
        history.append(rec)
        if best_key is None or key > best_key:
            best_key, best_epoch, bad = key, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
        progress.step((epoch + 1) / settings.max_epochs)
        if bad >= settings.patience and not (fusion == "moe" and epoch < moe_warmup):
            break
    module.load_state_dict(best_state)
    module.cpu().eval()
    config["best_epoch"] = best_epoch
    config["epochs_run"] = len(history)
    head = TrainedHead(module, config, history)
    if va.size:
        head.val_metrics = classification_metrics(y[va], head.predict(x[va]), k)
    progress.log(f"Head ({fusion}): best epoch {best_epoch + 1} of {len(history)}, "
                 + (f"validation OA {head.val_metrics['overall_accuracy']:.3f} on {va.size} training-label pixels"
                    if va.size else "no validation pixels"))
    return head
