"""Reproduce UniDiff on the official Augsburg / Berlin benchmark and print our numbers beside the paper's.

    python benchmarks/reproduce_s2fl.py --dataset augsburg --data-dir DIR --checkpoint 64x64_diffusion.pt
                                        [--labels-dir DIR] [--seed 0] [--dry-run] [--out result.json]

``DIR`` holds the official files: ``data_HS_LR.mat`` (H×W×bands HSI), ``data_SAR_HR.mat`` (H×W×4 SAR),
``TrainImage.mat`` and ``TestImage.mat`` (0 = unlabelled, 1..K); Berlin's test labels may instead be
``test_label_berlin.npy``. Label files are looked up in ``--labels-dir`` first, then in ``--data-dir``.

Data: Hong et al., "Multimodal remote sensing benchmark datasets for land cover classification with a shared
and specific feature learning model", ISPRS J. Photogramm. Remote Sens. 178 (2021) 68-80.

This file is plumbing only (loading, shape checks, labels, settings, scoring); the model runs behind
``run_pipeline(hsi [H,W,B], sar [H,W,S], train_labels [H,W], settings) -> map [H,W] of 1..K``. The default
calls ``engine.tasks.landcover.fit_predict_arrays``. Test labels never reach ``run_pipeline``: they are used for
scoring only, after the prediction exists (the public code selected models on test pixels; we do not).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PAPER_RESULTS = REPO.parent / "shared" / "reference" / "paper_results.md"
METRIC_KEYS = (("OA", "overall_accuracy"), ("AA", "average_accuracy"), ("Kappa", "kappa"),
               ("mIoU", "mean_iou"), ("mF1", "mean_f1"))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    height: int
    width: int
    hsi_bands: int
    sar_bands: int
    rgb_bands0: Tuple[int, int, int]  # the paper's 0-based pRGB bands
    timestep: int
    block: int
    class_names: Tuple[str, ...]
    n_train: int  # official pixel counts: a mismatch means the wrong label file
    n_test: int


DATASETS: Dict[str, DatasetSpec] = {
    "augsburg": DatasetSpec("augsburg", 332, 485, 180, 4, (21, 11, 6), 0, 10,
                            ("Forest", "Residential area", "Industrial area", "Low plants", "Allotment",
                             "Commercial area", "Water"), 761, 77_533),
    "berlin": DatasetSpec("berlin", 1723, 476, 244, 4, (40, 30, 15), 300, 11,
                          ("Forest", "Residential area", "Industrial area", "Low plants", "Soil", "Allotment",
                           "Commercial area", "Water"), 2_820, 461_851),
}

# UniDiff, HSI + SAR, official splits (percent). Used when paper_results.md is not readable.
PUBLISHED = {
    "augsburg": {"OA": 93.08, "AA": 71.68, "Kappa": 89.97, "mIoU": 62.36, "mF1": 72.10},
    "berlin": {"OA": 80.96, "AA": 68.08, "Kappa": 70.05, "mIoU": 53.34, "mF1": 66.25},
}
PUBLISHED_SOURCE = "UniDiff (as tabulated in shared/reference/paper_results.md)"

HSI_FILE, HSI_VAR = "data_HS_LR.mat", "data_HS_LR"
SAR_FILE, SAR_VAR = "data_SAR_HR.mat", "data_SAR_HR"


class InputError(ValueError):
    """An input file is missing, unreadable, or has the wrong variable / shape."""


# ---------------------------------------------------------------------------------------------------------
# .mat reading with clear errors

def _h5py():
    try:
        import h5py  # noqa: F401
    except ImportError:
        return None
    return h5py


def mat_variables(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Variable name → shape without reading the data (v5 via scipy; v7.3 via h5py if installed)."""
    import scipy.io as sio

    if not path.exists():
        raise InputError(f"{path} not found")
    try:
        return {name: tuple(shape) for name, shape, _ in sio.whosmat(str(path))}
    except (NotImplementedError, ValueError) as e:
        h5 = _h5py()
        if h5 is None:
            raise InputError(f"{path} is not a MATLAB v5 file scipy can read ({e}); if it is a v7.3 (HDF5) file, "
                             "install h5py or re-save it in MATLAB with save(..., '-v7')") from e
        with h5.File(str(path), "r") as f:  # MATLAB stores column-major: shapes come reversed
            return {k: tuple(reversed(f[k].shape)) for k in f.keys() if hasattr(f[k], "shape")}


def load_mat_array(path: Path, variable: str, expected_shape: Tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Read one variable, checking its name and shape first (before loading a possibly large cube)."""
    import scipy.io as sio

    found = mat_variables(path)
    if variable not in found:
        raise InputError(f"{path.name}: variable {variable!r} not found (it has: {', '.join(found) or 'none'}); "
                         f"expected the official file with {variable!r} of shape {expected_shape}")
    check_shape(found[variable], expected_shape, f"{path.name}:{variable}")
    try:
        arr = sio.loadmat(str(path), variable_names=[variable])[variable]
    except NotImplementedError:
        h5 = _h5py()
        with h5.File(str(path), "r") as f:
            arr = np.asarray(f[variable]).T
    check_shape(arr.shape, expected_shape, f"{path.name}:{variable}")
    return np.asarray(arr, dtype=dtype)


def check_shape(shape: Sequence[int], expected: Sequence[int], what: str) -> None:
    if tuple(shape) != tuple(expected):
        raise InputError(f"{what} has shape {tuple(shape)}; expected {tuple(expected)} (rows × columns"
                         f"{' × bands' if len(expected) == 3 else ''}). Use the official benchmark file.")


# ---------------------------------------------------------------------------------------------------------
# labels

@dataclass
class Labels:
    train: np.ndarray  # [H, W] int32, 0 = unlabelled, 1..K
    test: np.ndarray
    train_source: str
    test_source: str

    def counts(self, n_classes: int) -> Dict[str, List[int]]:
        return {k: np.bincount(v[v > 0], minlength=n_classes + 1)[1:].tolist()
                for k, v in (("train", self.train), ("test", self.test))}


def _find(dirs: Sequence[Path], names: Sequence[str]) -> Optional[Path]:
    for d in dirs:
        for n in names:
            if (d / n).exists():
                return d / n
    return None


def _as_labels(arr: np.ndarray, what: str, spec: DatasetSpec) -> np.ndarray:
    check_shape(arr.shape, (spec.height, spec.width), what)
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise InputError(f"{what} holds non-integer values; expected class numbers 0..{len(spec.class_names)}")
    arr = arr.astype(np.int32)
    if arr.min() < 0 or arr.max() > len(spec.class_names):
        raise InputError(f"{what} holds values {arr.min()}..{arr.max()}; expected 0 (unlabelled) .. "
                         f"{len(spec.class_names)} ({spec.name} has {len(spec.class_names)} classes)")
    return arr


def load_labels(spec: DatasetSpec, dirs: Sequence[Path]) -> Labels:
    """Official train/test label maps; Berlin's test map may be ``test_label_berlin.npy``."""
    dirs = [Path(d) for d in dirs]
    train_path = _find(dirs, ["TrainImage.mat"])
    test_path = _find(dirs, ["TestImage.mat", f"test_label_{spec.name}.npy"])
    where = " or ".join(str(d) for d in dirs)
    if train_path is None:
        raise InputError(f"TrainImage.mat not found in {where}")
    if test_path is None:
        raise InputError(f"TestImage.mat (or test_label_{spec.name}.npy) not found in {where}")
    shape = (spec.height, spec.width)
    train = _as_labels(load_mat_array(train_path, "TrainImage", shape, dtype=np.float64), "TrainImage", spec)
    if test_path.suffix == ".npy":
        test = _as_labels(np.load(test_path, allow_pickle=False), test_path.name, spec)
    else:
        test = _as_labels(load_mat_array(test_path, "TestImage", shape, dtype=np.float64), "TestImage", spec)
    overlap = int(((train > 0) & (test > 0)).sum())
    if overlap:
        raise InputError(f"{overlap} pixels are labelled in both {train_path.name} and {test_path.name}: "
                         "the official splits are disjoint — check the files")
    return Labels(train, test, str(train_path), str(test_path))


# ---------------------------------------------------------------------------------------------------------
# settings and the plan

def build_settings(spec: DatasetSpec, checkpoint: Optional[str], seed: int = 0, device: str = "auto"):
    """The paper's configuration: ImageNet ADM adapted with pRGB/PCA/SAR, one timestep, one decoder block.

    The head sees the diffusion features only (``include_spectrum=False``), as in the paper.
    """
    from engine.settings import PipelineSettings

    s = PipelineSettings()
    s.seed = seed
    s.device = device
    s.modalities = ("prgb", "pca", "sar")
    s.backbone.checkpoint = checkpoint
    s.representation.rgb_bands = tuple(b + 1 for b in spec.rgb_bands0)  # settings are 1-based
    s.representation.sar_db = False
    s.representation.sar_polarisation = "dual"
    s.adaptation.preset = "paper"
    s.features.timesteps = (spec.timestep,)
    s.features.blocks = (spec.block,)
    s.head.include_spectrum = False
    s.head.kind = "mlp"  # the paper's MLP head
    return s


def published_results(dataset: str, path: Path = PAPER_RESULTS) -> Tuple[Dict[str, float], str]:
    """The paper's row from paper_results.md (first UniDiff row of the dataset), else the embedded copy."""
    try:
        text = path.read_text()
    except OSError:
        return dict(PUBLISHED[dataset]), PUBLISHED_SOURCE + " [embedded copy]"
    header = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.strip().startswith("|") else None
        if not cells:
            continue
        if cells[:2] == ["dataset", "method"]:
            header = cells
        elif header and cells[0].lower() == dataset and cells[1].startswith("UniDiff"):
            row = {}
            for name, value in zip(header[2:], cells[2:]):
                if re.fullmatch(r"[0-9.]+", value):
                    row[name] = float(value)
            return row, f"{cells[1]}, {path.name}"
    return dict(PUBLISHED[dataset]), PUBLISHED_SOURCE + " [embedded copy]"


@dataclass
class Plan:
    spec: DatasetSpec
    hsi_path: Path
    sar_path: Path
    labels: Labels
    settings: object
    sar_intensity_bands: Tuple[int, ...]

    def describe(self) -> str:
        counts = self.labels.counts(len(self.spec.class_names))
        s = self.spec
        lines = [
            f"UniDiff reproduction — {s.name}",
            f"  HSI  {self.hsi_path} : {HSI_VAR} {s.height}×{s.width}×{s.hsi_bands}",
            f"  SAR  {self.sar_path} : {SAR_VAR} {s.height}×{s.width}×{s.sar_bands}; intensity bands (0-based) "
            f"{self.sar_intensity_bands} → dual-pol pseudo-Pauli",
            f"  train {self.labels.train_source}: {sum(counts['train'])} px {counts['train']}",
            f"  test  {self.labels.test_source}: {sum(counts['test'])} px {counts['test']}",
            f"  modalities pRGB (0-based bands {s.rgb_bands0}) / PCA / SAR; timestep {s.timestep}; "
            f"decoder block {s.block}",
            f"  checkpoint {self.settings.backbone.checkpoint}; adaptation {self.settings.adaptation.steps} steps, "
            f"lr {self.settings.adaptation.lr}, batch {self.settings.adaptation.batch_size}; seed {self.settings.seed}",
        ]
        return "\n".join(lines)


def make_plan(dataset: str, data_dir: Path, labels_dir: Optional[Path], checkpoint: Optional[str], seed: int = 0,
              device: str = "auto", sar_intensity_bands: Tuple[int, ...] = (0, 1),
              require_checkpoint: bool = True) -> Plan:
    """Check every input (names, variables, shapes, label counts) without loading the cubes."""
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    data_dir = Path(data_dir)
    hsi_path, sar_path = data_dir / HSI_FILE, data_dir / SAR_FILE
    for path, var, shape in ((hsi_path, HSI_VAR, (spec.height, spec.width, spec.hsi_bands)),
                             (sar_path, SAR_VAR, (spec.height, spec.width, spec.sar_bands))):
        found = mat_variables(path)
        if var not in found:
            raise InputError(f"{path.name}: variable {var!r} not found (it has: {', '.join(found) or 'none'})")
        check_shape(found[var], shape, f"{path.name}:{var}")
    if any(not 0 <= b < spec.sar_bands for b in sar_intensity_bands) or len(sar_intensity_bands) != 2:
        raise InputError(f"--sar-intensity-bands must name two 0-based bands in 0..{spec.sar_bands - 1}")
    if require_checkpoint and (not checkpoint or not Path(checkpoint).exists()):
        what = f"checkpoint {checkpoint} not found" if checkpoint else "no checkpoint given"
        raise InputError(f"{what}: pass --checkpoint with the ImageNet ADM 64x64_diffusion.pt file")
    dirs = [Path(labels_dir)] if labels_dir else []
    labels = load_labels(spec, dirs + [data_dir])
    counts = labels.counts(len(spec.class_names))
    for part, expected in (("train", spec.n_train), ("test", spec.n_test)):
        if sum(counts[part]) != expected:
            print(f"warning: {part} labels have {sum(counts[part])} px; the official {spec.name} split has "
                  f"{expected}", file=sys.stderr)
    return Plan(spec, hsi_path, sar_path, labels, build_settings(spec, checkpoint, seed, device),
                tuple(sar_intensity_bands))


# ---------------------------------------------------------------------------------------------------------
# the model behind one function

RunPipeline = Callable[[np.ndarray, np.ndarray, np.ndarray, object], np.ndarray]


def run_pipeline(hsi: np.ndarray, sar: np.ndarray, train_labels: np.ndarray, settings) -> np.ndarray:
    """hsi [H,W,B], sar [H,W,S] (linear intensities), train_labels [H,W] 0/1..K → predicted map [H,W] 1..K."""
    try:
        from engine.tasks import landcover as pipeline
    except ImportError as e:
        raise NotImplementedError(f"engine.tasks.landcover cannot be imported ({e}): the diffusion pipeline is not "
                                  "available in this checkout") from e
    fn = getattr(pipeline, "fit_predict_arrays", None)
    if fn is None:
        raise NotImplementedError("engine.tasks.landcover.fit_predict_arrays is not implemented yet: the reproduction "
                                  "harness has nothing to run (use --dry-run to check the inputs)")
    from engine.data.representations import BandMeta

    # the band counts only: the dB flag and polarisation once written here never reached the engine (issue 11)
    hsi_meta, sar_meta = BandMeta(hsi.shape[2]), BandMeta(sar.shape[2])
    return fn(np.ascontiguousarray(hsi.transpose(2, 0, 1)), np.ascontiguousarray(sar.transpose(2, 0, 1)),
              train_labels, settings, hsi_meta=hsi_meta, sar_meta=sar_meta)


def load_cubes(plan: Plan) -> Tuple[np.ndarray, np.ndarray]:
    s = plan.spec
    hsi = load_mat_array(plan.hsi_path, HSI_VAR, (s.height, s.width, s.hsi_bands))
    sar = load_mat_array(plan.sar_path, SAR_VAR, (s.height, s.width, s.sar_bands))
    return hsi, sar[:, :, list(plan.sar_intensity_bands)]


def score(plan: Plan, prediction: np.ndarray) -> Dict:
    from engine.assessment.metrics import classification_metrics

    s = plan.spec
    check_shape(np.shape(prediction), (s.height, s.width), "run_pipeline's prediction")
    test = plan.labels.test
    rows, cols = np.nonzero(test > 0)
    pred = np.asarray(prediction)[rows, cols].astype(np.int64)
    missing = int(((pred < 1) | (pred > len(s.class_names))).sum())
    if missing:
        raise ValueError(f"the prediction has no valid class at {missing} test pixels (values outside "
                         f"1..{len(s.class_names)})")
    return classification_metrics(test[rows, cols] - 1, pred - 1, len(s.class_names), list(s.class_names))


def comparison_table(dataset: str, metrics: Dict) -> str:
    published, source = published_results(dataset)
    lines = [f"| {dataset} | " + " | ".join(k for k, _ in METRIC_KEYS) + " |",
             "|---" * (len(METRIC_KEYS) + 1) + "|",
             "| ours | " + " | ".join(f"{100 * metrics[key]:.2f}" for _, key in METRIC_KEYS) + " |",
             "| published | " + " | ".join(f"{published[k]:.2f}" if k in published else "—"
                                         for k, _ in METRIC_KEYS) + " |",
             f"\npublished: {source}"]
    return "\n".join(lines)


def reproduce(plan: Plan, runner: Optional[RunPipeline] = None, log=print) -> Dict:
    runner = runner or run_pipeline  # looked up at call time so tests can monkeypatch the module attribute
    t0 = time.perf_counter()
    hsi, sar = load_cubes(plan)
    log(f"loaded cubes in {time.perf_counter() - t0:.1f} s: HSI {hsi.shape}, SAR {sar.shape}")
    t1 = time.perf_counter()
    prediction = runner(hsi, sar, plan.labels.train.copy(), plan.settings)
    seconds = time.perf_counter() - t1
    metrics = score(plan, prediction)
    return {"dataset": plan.spec.name, "metrics": metrics, "pipeline_seconds": seconds,
            "published": published_results(plan.spec.name)[0], "settings": plan.settings.to_dict()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--labels-dir", type=Path, default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--sar-intensity-bands", default="0,1",
                   help="0-based SAR bands holding the VV and VH intensities (default 0,1)")
    p.add_argument("--dry-run", action="store_true", help="check the inputs and print the plan only")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    a = p.parse_args(argv)
    try:
        plan = make_plan(a.dataset, a.data_dir, a.labels_dir, a.checkpoint, a.seed, a.device,
                         tuple(int(b) for b in a.sar_intensity_bands.split(",")), require_checkpoint=not a.dry_run)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(plan.describe())
    if a.dry_run:
        published, source = published_results(a.dataset)
        print("published: " + ", ".join(f"{k} {v:.2f}" for k, v in published.items()) + f" ({source})")
        print("dry run: inputs OK, nothing run")
        return 0
    result = reproduce(plan)
    print(comparison_table(a.dataset, result["metrics"]))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
