"""ADM backbone: exact ImageNet layout, numerics, truncated forward, safe strict loading."""
from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.networks.backbone import (
    ADM_IMAGENET_64, COMPACT_64, ADMUNet, BackboneLoadError, GroupNorm32, QKVAttention, UNetConfig,
    build_backbone, default_feature_blocks, load_backbone, save_backbone, timestep_embedding, weights_fingerprint,
)

MANIFEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "adm64_imagenet_state_dict.txt"
if not MANIFEST.is_file():
    MANIFEST = Path("/work/shared/reference/adm64_imagenet_state_dict.txt")

TINY = UNetConfig(name="tiny", image_size=16, in_channels=3, model_channels=32, out_channels=6,
                  num_res_blocks=1, attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=32,
                  num_classes=5, learn_sigma=True, dropout=0.1)


def _randomised(config=TINY, seed=0) -> ADMUNet:
    """A tiny model whose zero-initialised convs are filled too, so every branch affects the output."""
    model = build_backbone(config, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _inputs(config=TINY, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, config.in_channels, config.image_size, config.image_size, generator=g)
    return x, torch.tensor([0, 300] * (b // 2))[:b], torch.tensor([1, 3] * (b // 2))[:b]


# ----------------------------------------------------------------------------------------------- layout
def _manifest():
    out = []
    for line in MANIFEST.read_text().splitlines():
        name, shape = line.split(" ", 1)
        out.append((name, tuple(int(v) for v in re.findall(r"\d+", shape))))
    return out


def test_imagenet_config_matches_official_state_dict_exactly():
    with torch.device("meta"):
        model = build_backbone(ADM_IMAGENET_64)
    sd = model.state_dict()
    assert all(t.device.type == "meta" for t in sd.values())
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == _manifest()
    assert len(sd) == 541
    assert sum(v.numel() for v in sd.values()) == 295_904_454


def test_imagenet_decoder_table_and_default_blocks():
    with torch.device("meta"):
        info = build_backbone(ADM_IMAGENET_64).decoder_blocks()
    table = {i: (c, r) for i, c, r in info}
    assert len(info) == 16
    assert [table[i] for i in (0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 15)] == [
        (768, 8), (768, 8), (768, 16), (576, 16), (576, 16), (576, 32), (384, 32), (384, 32), (384, 64),
        (192, 64), (192, 64)]
    assert default_feature_blocks(ADM_IMAGENET_64) == (10, 11)
    compact_net = build_backbone(COMPACT_64)
    compact = compact_net.decoder_blocks()
    half, full = default_feature_blocks(COMPACT_64)
    assert default_feature_blocks(compact_net) == (half, full)  # a built network answers without a meta copy
    assert {i: r for i, _, r in compact}[half] == 32 and {i: r for i, _, r in compact}[full] == 64
    assert all(r < 64 for i, _, r in compact if i < full)


def test_config_dict_round_trip_and_validation():
    for cfg in (ADM_IMAGENET_64, COMPACT_64, TINY):
        assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        UNetConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="learn_sigma"):
        UNetConfig.from_dict({**TINY.to_dict(), "out_channels": 3})


def test_compact_config_fits_modality_ids():
    assert COMPACT_64.num_classes >= 5 and not COMPACT_64.learn_sigma and COMPACT_64.image_size == 64
    model = build_backbone(COMPACT_64, seed=0)
    assert model.config is COMPACT_64
    y = torch.tensor([1, 2, 3, 4])
    assert model(torch.zeros(4, 3, 64, 64), torch.zeros(4, dtype=torch.long), y).shape == (4, 3, 64, 64)


# ----------------------------------------------------------------------------------------------- numerics
def test_timestep_embedding_formula_cos_first():
    t = torch.tensor([0, 1, 37, 999])
    dim = 192
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for row, tv in enumerate(t.tolist()):
        for i in (0, 1, 50, half - 1):
            freq = math.exp(-math.log(10000.0) * i / half)
            assert emb[row, i].item() == pytest.approx(math.cos(tv * freq), abs=1e-4)
            assert emb[row, half + i].item() == pytest.approx(math.sin(tv * freq), abs=1e-4)
    model = build_backbone(TINY, seed=0)
    assert model.time_embed[0].in_features == TINY.model_channels
    assert model.time_embed[2].out_features == 4 * TINY.model_channels


def test_embedding_is_time_plus_label():
    model = _randomised()
    t, y = torch.tensor([5, 700]), torch.tensor([2, 4])
    expected = model.time_embed(timestep_embedding(t, TINY.model_channels)) + model.label_emb(y)
    assert torch.allclose(model._embedding(torch.zeros(2, 3, 16, 16), t, y), expected)
    with pytest.raises(ValueError, match="labels"):
        model(torch.zeros(1, 3, 16, 16), torch.tensor([0]), None)


def test_qkv_attention_new_order_matches_sdpa():
    torch.manual_seed(0)
    b, heads, ch, length = 2, 3, 8, 10
    qkv = torch.randn(b, 3 * heads * ch, length)
    out = QKVAttention(heads)(qkv)
    q, k, v = (z.reshape(b, heads, ch, length).transpose(2, 3) for z in qkv.chunk(3, dim=1))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, heads * ch, length)
    assert torch.allclose(out, ref, atol=1e-5)


def test_groupnorm_runs_in_fp32_and_returns_input_dtype():
    gn = GroupNorm32(32, 64)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
    x = (torch.randn(2, 64, 4, 4) * 50 + 1000).to(torch.bfloat16)
    out = gn(x)
    assert out.dtype == torch.bfloat16
    ref = F.group_norm(x.float(), 32, gn.weight, gn.bias).to(torch.bfloat16)
    assert torch.equal(out, ref)


def test_zero_initialised_output_and_residual_convs():
    model = build_backbone(TINY, seed=0)
    assert torch.count_nonzero(model.out[2].weight) == 0
    assert torch.count_nonzero(model.output_blocks[0][0].out_layers[3].weight) == 0
    x, t, y = _inputs()
    assert torch.count_nonzero(model.eval()(x, t, y)) == 0


# ----------------------------------------------------------------------------------------------- truncated forward
def test_forward_features_equal_full_forward_hooks():
    model = _randomised()
    x, t, y = _inputs()
    captured = {}
    hooks = [model.output_blocks[i].register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(i, o.clone()))
             for i in range(len(model.output_blocks))]
    with torch.no_grad():
        model(x, t, y)
    for h in hooks:
        h.remove()
    blocks = default_feature_blocks(TINY)
    with torch.no_grad():
        feats = model.forward_features(x, t, y, blocks)
        single = model.forward_features(x, t, y, [0])
    assert sorted(feats) == sorted(blocks)
    for i in blocks:
        assert torch.allclose(feats[i], captured[i], atol=1e-6)
        assert feats[i].abs().sum() > 0
    assert torch.allclose(single[0], captured[0], atol=1e-6)


def test_forward_features_skips_later_blocks():
    model = _randomised()
    x, t, y = _inputs()
    stop = 1
    ran = []
    later = list(model.output_blocks[stop + 1:]) + [model.out]
    hooks = [m.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, m in enumerate(later)]
    with torch.no_grad():
        model.forward_features(x, t, y, [stop])
    assert ran == []
    with torch.no_grad():
        model(x, t, y)
    assert len(ran) == len(later)
    for h in hooks:
        h.remove()
    with pytest.raises(ValueError, match="feature blocks"):
        model.forward_features(x, t, y, [len(model.output_blocks)])


def test_same_seed_same_outputs_and_rng_untouched():
    x, t, y = _inputs()
    state = torch.random.get_rng_state()
    a, b, c = build_backbone(TINY, seed=3), build_backbone(TINY, seed=3), build_backbone(TINY, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert weights_fingerprint(a) == weights_fingerprint(b) != weights_fingerprint(c)
    with torch.no_grad():
        fa = a.eval().forward_features(x, t, y, [1])[1]
        fb = b.eval().forward_features(x, t, y, [1])[1]
    assert torch.equal(fa, fb)


# ----------------------------------------------------------------------------------------------- identity + files
def test_fingerprint_sensitive_and_order_independent():
    model = _randomised()
    sd = model.state_dict()
    fp = weights_fingerprint(model)
    assert fp == weights_fingerprint(dict(reversed(list(sd.items()))))
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    changed = {k: v.clone() for k, v in sd.items()}
    changed["out.2.bias"][0] += 1e-3
    assert weights_fingerprint(changed) != fp
    assert weights_fingerprint({k: v.double() for k, v in sd.items()}) != fp


def test_save_load_round_trip(tmp_path):
    from safetensors import safe_open

    model = _randomised()
    path = tmp_path / "bb.safetensors"
    fp = save_backbone(model, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert fp == weights_fingerprint(model) and fp in meta.values()
    loaded = load_backbone(path)  # config from metadata
    assert loaded.config == TINY and not loaded.training
    assert weights_fingerprint(loaded) == fp
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))


def test_load_official_format_torch_state_dict(tmp_path):
    model = _randomised()
    path = tmp_path / "official.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)  # like the fp16 exports
    loaded = load_backbone(path, config=TINY)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x, t, y = _inputs()
    with torch.no_grad():
        ref = model(x, t, y)
        assert torch.allclose(loaded(x, t, y), ref, atol=0.05 * ref.abs().max().item())


def test_mismatched_file_names_problems(tmp_path):
    sd = _randomised().state_dict()
    del sd["input_blocks.0.0.weight"], sd["time_embed.0.bias"]
    sd["extra.weight"] = torch.zeros(3)
    sd["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(BackboneLoadError) as err:
        load_backbone(path, config=TINY)
    msg = str(err.value)
    assert str(path) in msg and "'tiny'" in msg
    assert "2 missing" in msg and "input_blocks.0.0.weight" in msg and "time_embed.0.bias" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "1 wrong shape (out.2.weight: file [3, 32, 3, 3], expected [6, 32, 3, 3])" in msg
    assert "64x64_diffusion.pt" in msg
    # the tiny file against the default ImageNet config: clear mismatch, not a torch traceback
    good = tmp_path / "tiny.pt"
    torch.save(_randomised().state_dict(), good)
    with pytest.raises(BackboneLoadError, match="adm_imagenet_64.*missing"):
        load_backbone(good)


class _Payload:  # a pickled object with code: weights_only loading must refuse it
    def __reduce__(self):
        return (print, ("should never run",))


@pytest.mark.parametrize("kind", ["list", "dict_of_lists", "code", "garbage", "corrupt_safetensors", "absent"])
def test_unusable_files_give_clear_errors(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "list":
        torch.save([1, 2, 3], path)
        expect = "holds a list, not a state dict"
    elif kind == "dict_of_lists":
        torch.save({"a": [1, 2]}, path)
        expect = "not a state dict"
    elif kind == "code":
        path.write_bytes(pickle.dumps({"w": _Payload()}))
        expect = "not a plain tensor state dict"
    elif kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all" * 10)
        expect = "cannot be read"
    elif kind == "corrupt_safetensors":
        save_backbone(build_backbone(TINY, seed=0), path)
        path.write_bytes(path.read_bytes()[:200])
        expect = "cannot be read"
    else:
        expect = "does not exist"
    with pytest.raises(BackboneLoadError) as err:
        load_backbone(path)
    assert expect in str(err.value) and str(path) in str(err.value)
    assert len(str(err.value)) < 1000


def test_bf16_autocast_forward_runs_and_tracks_fp32():
    """The CUDA path uses bf16 autocast; CPU autocast exercises the same dtype handling here."""
    model = _randomised()
    x, t, y = _inputs()
    with torch.inference_mode():
        ref = model.forward_features(x, t, y, [1])[1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_features(x, t, y, [1])[1]
            out = model(x, t, y)
    assert low.dtype == torch.bfloat16 and out.shape == (2, 6, 16, 16)
    assert torch.isfinite(out.float()).all()
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05
