"""ADM diffusion U-Net (the "guided-diffusion" architecture of Dhariwal & Nichol 2021, "Diffusion Models Beat
GANs on Image Synthesis", NeurIPS), written from the paper and its released hyper-parameters.

One configurable network serves two roles:
- ``ADM_IMAGENET_64``: exact layout of OpenAI's ``64x64_diffusion.pt`` so that checkpoint loads strictly;
- ``COMPACT_64``: the same architecture at a size a 2-core CPU can train on one scene.

Feature extraction only needs the decoder up to one block, so ``forward_features`` stops there
(nothing after block N can influence its output). Torch only: no QGIS / GDAL imports here.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNetConfig", "ADM_IMAGENET_64", "COMPACT_64", "ADMUNet", "BackboneLoadError", "build_backbone",
    "load_backbone", "save_backbone", "weights_fingerprint", "default_feature_blocks", "timestep_embedding",
]

_META_CONFIG = "difflc_unet_config"
_META_FINGERPRINT = "difflc_weights_fingerprint"


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of an ADM U-Net. ``attention_resolutions`` are downsample factors (2 = 32x32 at 64)."""

    name: str
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: tuple
    channel_mult: tuple
    num_classes: Optional[int]
    learn_sigma: bool
    image_size: int = 64
    in_channels: int = 3
    num_head_channels: int = 64
    dropout: float = 0.0
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True

    def __post_init__(self):
        # JSON gives lists back; keep the dataclass hashable and comparable.
        object.__setattr__(self, "attention_resolutions", tuple(int(a) for a in self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        if self.learn_sigma and self.out_channels != 2 * self.in_channels:
            raise ValueError(f"UNetConfig {self.name!r}: learn_sigma needs out_channels = 2 x in_channels "
                             f"({2 * self.in_channels}), got {self.out_channels}")
        for m in self.channel_mult:
            if (m * self.model_channels) % 32:
                raise ValueError(f"UNetConfig {self.name!r}: channels {m * self.model_channels} are not a "
                                 "multiple of 32 (GroupNorm uses 32 groups); change model_channels/channel_mult")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attention_resolutions"] = list(self.attention_resolutions)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"UNetConfig.from_dict: unknown fields {unknown}")
        return cls(**dict(d))


ADM_IMAGENET_64 = UNetConfig(
    name="adm_imagenet_64", image_size=64, in_channels=3, model_channels=192, out_channels=6,
    num_res_blocks=3, attention_resolutions=(2, 4, 8), channel_mult=(1, 2, 3, 4), num_head_channels=64,
    num_classes=1000, learn_sigma=True, dropout=0.1, resblock_updown=True, use_scale_shift_norm=True,
)

# Small enough to train a few hundred batch-16 steps and extract a 512x512 scene's features on a 2-core CPU
# (numbers in BENCHMARKS.md "Backbone throughput"). num_classes 5: modality ids 1-4 index label_emb.
COMPACT_64 = UNetConfig(
    name="compact_64", image_size=64, in_channels=3, model_channels=32, out_channels=3,
    num_res_blocks=1, attention_resolutions=(4, 8), channel_mult=(1, 1, 2, 2), num_head_channels=32,
    num_classes=5, learn_sigma=False, dropout=0.0, resblock_updown=True, use_scale_shift_norm=True,
)


class BackboneLoadError(ValueError):
    """A backbone file cannot be used: unreadable, not a state dict, or tensors that don't fit the config."""


# ----------------------------------------------------------------------------------------------- layers
class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in fp32 whatever the input dtype (bf16/fp16 statistics are too coarse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise: residual branches start as identity (ADM's init)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoid [N, dim]: cos half first, then sin; frequencies exp(-ln(max_period) * i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                            device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """A block that also takes the (time + class) embedding."""

    def forward(self, x, emb):  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    """Residual block with FiLM from the embedding; optionally does the 2x up/down sampling itself."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_scale_shift_norm=True,
                 up=False, down=False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            _norm(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def _resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x, emb):
        if self.up or self.down:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self._resample(h))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttention(nn.Module):
    """"New order" attention: split q/k/v first, then heads; q, k each scaled by ch^-1/4; softmax in fp32."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.chunk(3, dim=1)
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", (q * scale).reshape(bs * self.n_heads, ch, length),
                              (k * scale).reshape(bs * self.n_heads, ch, length))
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        a = torch.einsum("bts,bcs->bct", weight, v.reshape(bs * self.n_heads, ch, length))
        return a.reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_head_channels: int):
        super().__init__()
        if channels % num_head_channels:
            raise ValueError(f"attention channels {channels} not divisible by num_head_channels {num_head_channels}")
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.attention = QKVAttention(channels // num_head_channels)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


# ----------------------------------------------------------------------------------------------- network
class ADMUNet(nn.Module):
    """ADM U-Net. ``forward(x, t, y)`` predicts noise (and variance with learn_sigma)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        mc = c.model_channels
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(c.num_classes, emb_dim) if c.num_classes else None

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, c.dropout, out_channels=ch_out,
                            use_scale_shift_norm=c.use_scale_shift_norm, **kw)

        def attn(ch):
            return AttentionBlock(ch, c.num_head_channels)

        ch = int(c.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(c.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in c.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(c.channel_mult) - 1:
                if not c.resblock_updown:
                    raise ValueError("only resblock_updown=True is implemented (ADM's layout)")
                self.input_blocks.append(TimestepEmbedSequential(res(ch, ch, down=True)))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        self._block_info = []  # (index, channels, resolution) of each output block's output
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in c.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == c.num_res_blocks:
                    layers.append(res(ch, ch, up=True))
                    ds //= 2
                self._block_info.append((len(self.output_blocks), ch, c.image_size // ds))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, c.out_channels, 3, padding=1)))

    # -- helpers
    def decoder_blocks(self) -> list:
        """[(index, channels, resolution)] of each ``output_blocks[N]`` output, resolution in pixels."""
        return list(self._block_info)

    def _embedding(self, x, timesteps, y):
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(
            self.time_embed[0].weight.dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError(f"{self.config.name}: class-conditional model needs labels y (modality ids)")
            emb = emb + self.label_emb(y)
        return emb

    def _encode(self, x, emb):
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        return self.middle_block(h, emb), hs

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self._embedding(x, timesteps, y)
        h, hs = self._encode(x, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))

    def forward_features(self, x: torch.Tensor, timesteps: torch.Tensor, y: Optional[torch.Tensor],
                         blocks: Iterable[int]) -> dict:
        """Outputs of ``output_blocks[N]`` for N in ``blocks``; decoder blocks after max(blocks) never run."""
        wanted = sorted({int(b) for b in blocks})
        n = len(self.output_blocks)
        if not wanted or wanted[0] < 0 or wanted[-1] >= n:
            raise ValueError(f"{self.config.name}: feature blocks {list(blocks)} must be in 0..{n - 1} "
                             f"(decoder blocks: {self.decoder_blocks()})")
        emb = self._embedding(x, timesteps, y)
        h, hs = self._encode(x, emb)
        feats = {}
        for idx, module in enumerate(self.output_blocks[: wanted[-1] + 1]):
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
            if idx in wanted:
                feats[idx] = h
        return feats


def build_backbone(config: UNetConfig = ADM_IMAGENET_64, seed: Optional[int] = None) -> ADMUNet:
    """Build a randomly initialised network. Works under ``with torch.device("meta")`` (no allocation).

    ``seed`` makes the initialisation reproducible without touching the global RNG state.
    """
    if seed is None:
        return ADMUNet(config)
    from .device import seeded

    with seeded(seed, exclusive=True):
        return ADMUNet(config)


def default_feature_blocks(config: Union[UNetConfig, "ADMUNet"]) -> tuple:
    """(last decoder block at half resolution, first at full resolution): (10, 11) for ADM_IMAGENET_64.

    These are the paper's two choices (Augsburg N=10 at 32x32, Berlin N=11 upsampled to 64x64). Given a built
    network its own decoder answers; a bare config is built on the meta device (≈ 1 s the first time in a process,
    torch's meta initialisers load then), which classify need not pay.
    """
    if isinstance(config, ADMUNet):
        info, config = config.decoder_blocks(), config.config
    else:
        with torch.device("meta"):
            info = ADMUNet(config).decoder_blocks()
    full, half = config.image_size, config.image_size // 2
    halves = [i for i, _, r in info if r == half]
    fulls = [i for i, _, r in info if r == full]
    if not halves or not fulls:
        raise ValueError(f"{config.name}: no decoder block at {half}px and {full}px (decoder: {info}); "
                         "pass the feature blocks explicitly")
    return (max(halves), min(fulls))


# ----------------------------------------------------------------------------------------------- identity
def weights_fingerprint(model_or_state_dict: Union[nn.Module, Mapping[str, torch.Tensor]]) -> str:
    """sha256 over sorted (name, shape, dtype, raw bytes): proves which base weights an adaptation used."""
    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name]
        if t.device.type == "meta":
            raise ValueError(f"weights_fingerprint: tensor {name!r} is on the meta device (no data)")
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{str(t.dtype)}\n".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- files
def save_backbone(model: ADMUNet, path: Union[str, Path]) -> str:
    """Write a safetensors file with the config JSON and the weights fingerprint in its metadata.

    Returns the fingerprint.
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    fp = weights_fingerprint(sd)
    meta = {"format": "pt", _META_CONFIG: json.dumps(model.config.to_dict()), _META_FINGERPRINT: fp}
    save_file(sd, str(path), metadata=meta)
    return fp


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # corrupt header / truncated file
        raise BackboneLoadError(f"Backbone file {path} looks like safetensors but cannot be read ({exc}). "
                                "The file is probably truncated or corrupt: download/save it again.") from None
    cfg = None
    if _META_CONFIG in meta:
        try:
            cfg = UNetConfig.from_dict(json.loads(meta[_META_CONFIG]))
        except (ValueError, TypeError) as exc:
            raise BackboneLoadError(f"Backbone file {path}: its config metadata is invalid ({exc}).") from None
    return sd, cfg


def _read_torch(path: Path):
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is what matters
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text suggests weights_only=False, which would run the file's code: show only the cause.
        found = re.search(r"Unpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", str(exc), re.S)
        cause = " ".join(found.group(1).split()) if found else type(exc).__name__
        raise BackboneLoadError(
            f"Backbone file {path} is not a plain tensor state dict: it contains Python objects that a safe "
            f"load refuses ({cause[:200]}). Use the official 64x64_diffusion.pt (a plain state dict) or a "
            "file written by save_backbone; never load untrusted checkpoints with code.") from None
    except Exception as exc:
        raise BackboneLoadError(
            f"Backbone file {path} cannot be read as a torch checkpoint or safetensors file "
            f"({type(exc).__name__}: {str(exc)[:200]}). The file may be truncated or of another format: "
            "download the official 64x64_diffusion.pt again.") from None
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "ema"):  # common wrappers
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        kind = type(obj).__name__
        raise BackboneLoadError(
            f"Backbone file {path} holds a {kind}, not a state dict of named tensors. Use the official "
            "64x64_diffusion.pt or a file written by save_backbone.")
    return dict(obj), None


def _names(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (", ..." if len(items) > n else "")


def check_state_dict(sd: Mapping[str, torch.Tensor], config: UNetConfig, source: str = "state dict") -> None:
    """Raise BackboneLoadError listing missing / unexpected / wrongly shaped tensors against ``config``."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ADMUNet(config).state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: file {list(sd[k].shape)}, expected {list(expected[k])}"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape ({_names(wrong, 3)})")
    raise BackboneLoadError(
        f"Backbone file {source} does not match config {config.name!r} "
        f"({len(expected)} tensors expected, {len(sd)} in file): {', '.join(parts)}. "
        f"For the ImageNet backbone use OpenAI's 64x64_diffusion.pt (guided-diffusion, class-conditional, "
        f"learned sigma); for other files pass the config they were trained with, or re-save with save_backbone.")


def load_backbone(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                  config: Optional[UNetConfig] = None) -> ADMUNet:
    """Load our safetensors file (config from its metadata) or an official torch state dict.

    The keys and shapes are checked strictly before ``load_state_dict``; returns the model in eval mode, fp32.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneLoadError(f"Backbone file {path} does not exist. Download 64x64_diffusion.pt or "
                                "point the setting to an existing file.")
    if _is_safetensors(path):
        sd, file_cfg = _read_safetensors(path)
    else:
        sd, file_cfg = _read_torch(path)
    cfg = config or file_cfg or ADM_IMAGENET_64
    check_state_dict(sd, cfg, str(path))
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    with torch.device("meta"):
        model = ADMUNet(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device).eval()
