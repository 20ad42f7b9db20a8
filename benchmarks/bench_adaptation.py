"""Adaptation speed: FiLM adaptation steps/s and peak memory (engine.networks.adaptation.adapt, real training loop).

Torch + numpy only (no GDAL / QGIS), so it runs on a bare GPU machine:
    PYTHONPATH=. python benchmarks/bench_adaptation.py [--steps 6] [--out results.json] [--devices cpu,cuda]
compact_64 adapts its FiLM path the same way as ADM (same code path); ADM_IMAGENET_64 is random-initialised
(speed does not depend on the values). CPU runs fp32, CUDA bf16 autocast. Each measurement runs in a fresh
subprocess so ru_maxrss is that configuration's own peak. Steps/s is the median over the timed steps
(the first step is a warm-up and excluded).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.networks.adaptation import PoolSampler, adapt, trainable_parameter_names  # noqa: E402
from engine.networks.backbone import ADM_IMAGENET_64, COMPACT_64, build_backbone  # noqa: E402
from engine.progress import Progress  # noqa: E402
from engine.settings import AdaptSettings  # noqa: E402

CONFIGS = {"compact_64": COMPACT_64, "adm_imagenet_64": ADM_IMAGENET_64}
BATCH = {("compact_64", "cpu"): 16, ("adm_imagenet_64", "cpu"): 4,
         ("compact_64", "cuda"): 32, ("adm_imagenet_64", "cuda"): 32}


def measure(name: str, device: str, steps: int) -> dict:
    cfg = CONFIGS[name]
    batch = BATCH[(name, device)]
    model = build_backbone(cfg, seed=0)
    rng = np.random.default_rng(0)
    sampler = PoolSampler({m: np.tanh(rng.normal(size=(16, 3, 64, 64))).astype(np.float32)
                           for m in ("prgb", "pca", "sar")})
    stamps = []

    def on_progress(_f):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = adapt(model, sampler, AdaptSettings(steps=steps, batch_size=batch), seed=0, device=device,
                   progress=Progress(on_progress=on_progress))
    total = time.perf_counter() - t0
    step_times = np.diff([t0] + stamps)[1:]  # drop the warm-up step (fingerprint + first step)
    params = dict(model.named_parameters())
    n_train = sum(params[k].numel() for k in trainable_parameter_names(model))
    res = {"config": name, "device": device, "dtype": "bf16 autocast" if device == "cuda" else "fp32",
           "batch": batch, "steps": steps, "trainable": n_train,
           "total_params": sum(p.numel() for p in params.values()),
           "median_step_s": float(statistics.median(step_times)) if len(step_times) else float("nan"),
           "total_s": total, "final_loss": result.losses[-1], "torch_threads": torch.get_num_threads()}
    res["steps_per_s"] = 1.0 / res["median_step_s"]
    res["samples_per_s"] = batch / res["median_step_s"]
    if device == "cuda":
        res["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        res["gpu"] = torch.cuda.get_device_name()
    else:
        res["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="adaptation steps per config (first is warm-up)")
    ap.add_argument("--adm-steps", type=int, default=3, help="steps for ADM_IMAGENET_64 on CPU")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--configs", default="compact_64,adm_imagenet_64")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "DEVICE", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        name, device, steps = args.child
        print(json.dumps(measure(name, device, int(steps))))
        return 0
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    results = []
    for device in devices:
        for name in args.configs.split(","):
            steps = args.adm_steps if (name == "adm_imagenet_64" and device == "cpu") else args.steps
            out = subprocess.run([sys.executable, __file__, "--child", name, device, str(steps)],
                                 capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"{name:16s} {device:4s} {res['dtype']:13s} batch {res['batch']:3d}: "
                  f"{res['steps_per_s']:.3f} steps/s ({res['samples_per_s']:.1f} samples/s), "
                  f"peak {res['peak_mem_mb']:.0f} MiB, trainable {res['trainable']:,}/{res['total_params']:,}",
                  flush=True)
    meta = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
