"""Issue 22 item 6: Stage A times one step before any long work, logs the whole run's estimate, and ``auto``
chooses what fits this device (all steps, fewer, or the untrained compact network); an explicit choice runs as
asked. A tiny class-conditional stand-in with 1000 classes takes the ImageNet ADM's place (so its schedule is the
paper's 2000 x 32), found where the ImageNet checkpoint is looked for ($DIFFLC_BACKBONE)."""
import dataclasses
import re

import numpy as np
import pytest
import torch

from engine.networks import adaptation
from engine.networks.adaptation import plan_adaptation, time_adapt_step
from engine.networks.backbone import UNetConfig, build_backbone, save_backbone
from engine.data.readers import ArrayReader, StackedReader
from engine.progress import Progress
from engine.settings import AdaptSettings, PipelineSettings
from engine.tasks.landcover import fit_scene_representations, prepare_backbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STAND_IN = UNetConfig(name="imagenet_stand_in", model_channels=32, out_channels=3, num_res_blocks=1,
                      attention_resolutions=(), channel_mult=(1, 1), num_classes=1000, learn_sigma=False,
                      num_head_channels=32, dropout=0.1)


def test_plan_keeps_the_schedule_caps_it_or_takes_the_untrained_network():
    fits = plan_adaptation(2000, 32, 0.5, 1800, may_change=True)
    assert (fits.action, fits.steps, fits.estimate_s) == ("adapt", 2000, 1000) and "fits" in fits.why
    capped = plan_adaptation(2000, 32, 3.0, 1800, may_change=True)
    assert (capped.action, capped.steps, capped.estimate_s) == ("capped", 600, 1800)
    assert "capped at the 600 steps" in capped.why and "about 1.7 h" in capped.why
    cpu = plan_adaptation(2000, 32, 60.0, 1800, may_change=True)  # the ImageNet ADM on a 2-core CPU
    assert (cpu.action, cpu.steps) == ("untrained", 0) and "about 33.3 h" in cpu.why and "only 30" in cpu.why
    edge = plan_adaptation(2000, 32, 1800 / 200, 1800, may_change=True)  # exactly a tenth fits: still adapted
    assert (edge.action, edge.steps) == ("capped", 200)
    told = plan_adaptation(2000, 32, 60.0, 1800, may_change=False)  # explicit: runs, estimate kept
    assert (told.action, told.steps, told.estimate_s) == ("adapt", 2000, 120000) and "explicitly" in told.why
    assert plan_adaptation(2000, 32, 60.0, None, may_change=True).action == "adapt"


def test_one_real_timed_step_changes_nothing_of_the_model_or_the_generator(monkeypatch):
    model = build_backbone(STAND_IN, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    batches = []
    real_loss = adaptation.denoise_loss
    monkeypatch.setattr(adaptation, "denoise_loss", lambda m, x0, *a: batches.append(x0.shape[0]) or
                        real_loss(m, x0, *a))
    rng = torch.get_rng_state()
    model.eval()
    seconds = time_adapt_step(model, AdaptSettings(), 32, device="cpu", modality_ids=[1, 2])
    assert np.isfinite(seconds) and seconds > 0
    assert batches in ([adaptation.PROBE_BATCH_CPU], [adaptation.PROBE_BATCH_CPU] * 2)  # scaled to 32
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.fixture
def scene_and_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "stand_in.safetensors"
    save_backbone(build_backbone(STAND_IN, seed=1), path)
    monkeypatch.setenv("DIFFLC_BACKBONE", str(path))
    rng = np.random.default_rng(0)
    hsi = rng.normal(0.3, 0.05, size=(6, 72, 72)).astype(np.float32)
    hsi[:, :, 36:] += 0.2
    return StackedReader(ArrayReader(hsi)), path


def run(reader, source="auto", seconds_per_step=None, monkeypatch=None, **adapt):
    s = PipelineSettings()
    s.device, s.seed = "cpu", 3
    s.backbone.source, s.backbone.patch_pool = source, 8
    s.representation.rgb_bands = (5, 3, 1)
    for key, value in adapt.items():
        setattr(s.adaptation, key, value)
    if seconds_per_step is not None:
        monkeypatch.setattr(adaptation, "time_adapt_step", lambda *a, **k: seconds_per_step)
    reps = fit_scene_representations(reader, {"band_count": 6, "bad_bands": []}, None, s, Progress())
    lines = []
    prepared = prepare_backbone(reader, reps, s, Progress(on_message=lines.append))
    return prepared, lines


def test_auto_on_a_slow_device_takes_the_untrained_network_and_says_why(scene_and_checkpoint, monkeypatch):
    reader, _ = scene_and_checkpoint
    prepared, lines = run(reader, seconds_per_step=60.0, monkeypatch=monkeypatch)
    assert prepared.info.kind == "compact" and prepared.info.adaptation is None and prepared.tensors
    check = next(i for i, line in enumerate(lines) if line.startswith("Time check:"))
    assert "batch 32" in lines[check] and "2000 steps about 33.3 h" in lines[check]
    chosen = lines[check + 1]
    assert chosen.startswith("Backbone: compact ADM, randomly initialised") and "chosen by auto" in chosen
    assert "33.3 h" in chosen and "30 min" in chosen
    assert not any(line.startswith("FiLM adaptation:") for line in lines)


def test_auto_caps_the_steps_to_the_budget(tmp_path, scene_and_checkpoint, monkeypatch):
    reader, _ = scene_and_checkpoint
    # a stand-in with few classes has the short schedule (100 x 8), so the capped run stays quick here
    path = tmp_path / "short.safetensors"
    save_backbone(build_backbone(dataclasses.replace(STAND_IN, num_classes=10), seed=1), path)
    monkeypatch.setenv("DIFFLC_BACKBONE", str(path))
    # 12 steps fit the budget (a tenth of the schedule is 10): adapted, for those steps only
    prepared, lines = run(reader, seconds_per_step=60.0 / 12.5, monkeypatch=monkeypatch, time_budget_s=60.0,
                          batch_size=2)
    assert prepared.info.kind == "checkpoint" and prepared.info.checkpoint == str(path)
    assert prepared.info.adaptation.steps == 12 and prepared.tensors
    assert any(line.startswith("FiLM adaptation capped at 12 steps") and "the 100 steps would take about 8 min"
               in line for line in lines)
    assert any("12 steps, batch 2" in line for line in lines)  # what adapt() really ran


def test_explicit_choices_run_as_asked_with_the_estimate(scene_and_checkpoint, monkeypatch):
    reader, _ = scene_and_checkpoint
    prepared, lines = run(reader, "imagenet", seconds_per_step=60.0, monkeypatch=monkeypatch, steps=3,
                          batch_size=2, time_budget_s=60.0)  # over the budget, yet run in full
    assert prepared.info.kind == "checkpoint" and prepared.info.adaptation.steps == 3
    assert any(line.startswith("Time check:") and "3 steps about 3 min" in line for line in lines)
    assert any(line.startswith("Note: running all 3 steps as asked") for line in lines)
    # auto with ADAPT_STEPS given is an explicit length too
    prepared, _ = run(reader, seconds_per_step=60.0, monkeypatch=monkeypatch, steps=2, batch_size=2)
    assert prepared.info.kind == "checkpoint" and prepared.info.adaptation.steps == 2


def test_a_real_timed_step_decides_in_seconds(scene_and_checkpoint):
    reader, _ = scene_and_checkpoint
    prepared, lines = run(reader, time_budget_s=1e-3)  # nothing fits a millisecond: the real timing decides
    check = next(line for line in lines if line.startswith("Time check:"))
    seconds = float(re.search(r"takes about ([0-9.e+-]+) s on cpu", check).group(1))
    assert seconds > 0 and prepared.info.kind == "compact"
