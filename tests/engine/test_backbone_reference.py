"""Fidelity to the reference implementation: our ADM U-Net against guided-diffusion's ``UNetModel``.

The published guided-diffusion code (Dhariwal & Nichol 2021, MIT) is a test-only dependency
(``guided-diffusion-sdk`` on the package index, importable as ``guided_diffusion``; installed without its I/O
dependencies, which ``unet.py`` does not use). Both networks get the same random value in every tensor —
including the ones the reference initialises to zero, which would otherwise hide wiring errors behind identity
branches — and must give the same output, for the full forward and for the decoder blocks the features use.
"""
import warnings

import pytest
import torch

from engine.networks.backbone import ADM_IMAGENET_64, COMPACT_64, build_backbone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # its torch.cuda.amp decorators
    from guided_diffusion import unet  # test-only oracle: make setup installs it (requirements/reference.txt)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference(config):
    return unet.UNetModel(
        image_size=config.image_size, in_channels=config.in_channels, model_channels=config.model_channels,
        out_channels=config.out_channels, num_res_blocks=config.num_res_blocks,
        attention_resolutions=tuple(config.attention_resolutions), dropout=config.dropout,
        channel_mult=tuple(config.channel_mult), num_classes=config.num_classes, use_fp16=False,
        num_head_channels=config.num_head_channels, use_scale_shift_norm=config.use_scale_shift_norm,
        resblock_updown=config.resblock_updown, use_new_attention_order=True)


def _same_random_weights(ref, ours, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in ref.state_dict().items():
            scale = 1.0 if tensor.ndim == 1 and name.endswith("weight") else 0.0  # GroupNorm gains around 1
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.05 + scale)
    ours.load_state_dict(ref.state_dict(), strict=True)  # the names must match one to one


@pytest.mark.slow
@pytest.mark.parametrize("config", [COMPACT_64, ADM_IMAGENET_64], ids=["compact_64", "adm_imagenet_64"])
def test_same_weights_give_the_same_output_as_guided_diffusion(config):
    torch.manual_seed(1)
    ref, ours = _reference(config).eval(), build_backbone(config).eval()
    _same_random_weights(ref, ours)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 617])
    y = torch.tensor([1, 3])
    feats = {}
    hooks = [ref.output_blocks[i].register_forward_hook(lambda m, a, out, i=i: feats.__setitem__(i, out))
             for i in range(len(ref.output_blocks))]
    with torch.no_grad():
        expected = ref(x, t, y)
        got = ours(x, t, y)
        blocks = sorted({len(ref.output_blocks) // 2, len(ref.output_blocks) // 2 + 1, len(ref.output_blocks) - 1})
        ours_feats = ours.forward_features(x, t, y, blocks)
    for h in hooks:
        h.remove()
    assert expected.abs().max() > 0  # not a degenerate all-zero pass
    assert torch.equal(got, expected), float((got - expected).abs().max())
    for b in blocks:
        assert torch.equal(ours_feats[b], feats[b]), (b, float((ours_feats[b] - feats[b]).abs().max()))
