"""Backbone throughput: full vs truncated forward (default feature blocks), patches/s and peak memory.

Torch only (no GDAL / QGIS), so it runs on a bare GPU machine:
    PYTHONPATH=. python benchmarks/bench_backbone.py [--repeats 3] [--out results.json] [--devices cpu,cuda]
CPU runs fp32; CUDA runs bf16 autocast. Random-init weights (speed does not depend on the values).
Each CPU measurement runs in a fresh subprocess so ru_maxrss is that configuration's own peak.
"""
from __future__ import annotations

import argparse
import json
import os
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

import torch  # noqa: E402

from engine.networks.backbone import ADM_IMAGENET_64, COMPACT_64, build_backbone, default_feature_blocks  # noqa: E402

CONFIGS = {"adm_imagenet_64": (ADM_IMAGENET_64, 8), "compact_64": (COMPACT_64, 32)}


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def measure(name: str, device: str, repeats: int, train_steps: int) -> dict:
    """Time one (config, device): full forward, truncated forward and (compact only) a training step."""
    cfg, batch = CONFIGS[name]
    torch.manual_seed(0)
    model = build_backbone(cfg, seed=0).to(device).eval()
    blocks = default_feature_blocks(cfg)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.full((batch,), 200, dtype=torch.long, device=device)
    y = torch.ones(batch, dtype=torch.long, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    res = {"config": name, "device": device, "dtype": "bf16 autocast" if device == "cuda" else "fp32",
           "batch": batch, "blocks": list(blocks), "repeats": repeats,
           "params": sum(p.numel() for p in model.parameters())}
    fns = {"full": lambda: model(x, t, y), "truncated": lambda: model.forward_features(x, t, y, blocks)}
    times = {mode: [] for mode in fns}
    peaks = {mode: 0 for mode in fns}
    with torch.inference_mode(), amp:
        for fn in fns.values():  # warm-up
            fn()
        # Interleave full and truncated runs so load changes on a shared machine hit both alike.
        for _ in range(repeats):
            for mode, fn in fns.items():
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[mode].append(time.perf_counter() - t0)
                if device == "cuda":
                    peaks[mode] = max(peaks[mode], torch.cuda.max_memory_allocated() / 2**20)
    for mode in fns:
        med = statistics.median(times[mode])
        res[f"{mode}_s_per_batch"] = med
        res[f"{mode}_patches_per_s"] = batch / med
        res[f"{mode}_best_patches_per_s"] = batch / min(times[mode])
        res[f"{mode}_times"] = times[mode]
        if device == "cuda":
            res[f"{mode}_peak_mib"] = peaks[mode]
    if train_steps and name == "compact_64":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xb, tb, yb = x[:16], torch.randint(0, 1000, (16,), device=device), y[:16]

        def step():
            with amp:
                loss = (model(xb, tb, yb).float() - xb).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        med, times = _time(step, device, train_steps)
        res["train_step_b16_s"] = med
    if device == "cpu":
        res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _row(r):
    mem = f"{r['peak_rss_mib']:.0f} (RSS)" if "peak_rss_mib" in r else \
        f"{r['full_peak_mib']:.0f} / {r['truncated_peak_mib']:.0f}"
    train = f"{r['train_step_b16_s'] * 1000:.0f}" if "train_step_b16_s" in r else "—"
    return (f"| {r['config']} | {r['params'] / 1e6:.2f} M | {r['device']} {r['dtype']} | {r['batch']} | "
            f"{tuple(r['blocks'])} | {r['full_patches_per_s']:.2f} ({r['full_best_patches_per_s']:.2f}) | "
            f"{r['truncated_patches_per_s']:.2f} ({r['truncated_best_patches_per_s']:.2f}) | "
            f"{r['truncated_patches_per_s'] / r['full_patches_per_s']:.2f}x | {train} | {mem} |")


def table(results) -> str:
    head = ("| config | params | device / precision | batch | blocks | full fwd patches/s median (best) "
            "| truncated patches/s median (best) "
            "| speed-up (medians) | train step b16 (ms, median) | peak memory MiB (CPU: process RSS; CUDA: full / truncated) |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    return "\n".join([head] + [_row(r) for r in results])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    ap.add_argument("--train-steps", type=int, default=5, help="timed compact training steps (0 = skip)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--devices", default="cpu,cuda", help="cuda is skipped when not available")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=None, help="write all results as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:  # one CPU measurement in a fresh process (clean ru_maxrss)
        name, device = args.child.split(":")
        print(json.dumps(measure(name, device, args.repeats, args.train_steps)))
        return 0
    results = []
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        for name in args.configs.split(","):
            if device == "cpu":
                cmd = [sys.executable, __file__, "--child", f"{name}:cpu", "--repeats", str(args.repeats),
                       "--train-steps", str(args.train_steps)] + (["--threads", str(args.threads)] if args.threads else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ)).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
            else:
                results.append(measure(name, device, args.repeats, args.train_steps))
            print(f"done {name} on {device}", file=sys.stderr, flush=True)
    machine = {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
               "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(f"torch {machine['torch']}, {machine['cpu_count']} CPUs ({machine['torch_threads']} torch threads)"
          + (f", GPU {machine['cuda']}" if machine["cuda"] else "") + f", median of {args.repeats} runs\n")
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
