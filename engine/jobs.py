"""File-level jobs behind the Processing algorithms: paths and label geometries in, files out.

Each job opens the rasters (SAR warped onto the HSI grid when needed), calls the array-level pipeline and
writes its outputs through temporary files that are moved into place only when complete, so a failed or
cancelled run never leaves a half-written file or touches an existing one.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .labels import ClassInfo, LabelSamples, collect_point_labels, collect_polygon_labels
from .progress import Progress
from .raster_io import RasterInfo, RasterReader, read_info, scan_bad_bands
from .readers import StackedReader
from .settings import PipelineSettings


@dataclass
class LabelGeometries:
    """Label features in the HSI raster's CRS: points as x/y, polygons as WKB, with raw class values."""

    layer_name: str
    field_name: str
    xs: np.ndarray
    ys: np.ndarray
    point_values: List
    polygons_wkb: List[bytes] = field(default_factory=list)
    polygon_values: List = field(default_factory=list)
    styles: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)  # str(value) -> (name, colour)
    skipped_empty: int = 0


@dataclass
class Inputs:
    hsi_info: RasterInfo
    sar_info: Optional[RasterInfo]
    reader: StackedReader


def open_inputs(hsi_path: str, sar_path: Optional[str], progress: Progress, scan_bands: bool = False) -> Inputs:
    """Readers for the HSI and (warped onto its grid) SAR; optionally finds all-nodata HSI bands."""
    hsi = RasterReader(hsi_path)
    if hsi.band_count < 3:
        raise ValueError(f"the HSI raster {os.path.basename(hsi_path)} has {hsi.band_count} band(s): at least 3 "
                         "are needed (pseudo-RGB and PCA are built from them)")
    sar = RasterReader(sar_path, ref=hsi.info, log=progress.log, name="SAR", ref_name="HSI") if sar_path else None
    if scan_bands:
        empty = scan_bad_bands(hsi, progress=progress)
        extra = sorted(set(empty) - set(hsi.info.bad_bands))
        if extra:
            progress.log(f"HSI bands without any valid pixel, left out: {', '.join(str(b + 1) for b in extra)}")
            hsi.info.bad_bands = sorted(set(hsi.info.bad_bands) | set(extra))
    return Inputs(hsi.info, sar.info if sar else None, StackedReader(hsi, sar))


def _class_infos(labels: LabelGeometries) -> List[ClassInfo]:
    """ClassInfo for every styled class, keyed like engine.labels codes them (ints, or text → 1..K sorted)."""
    if not labels.styles:
        return []
    values = [v for v in list(labels.point_values) + list(labels.polygon_values) if v is not None]
    numeric = True
    for v in values:
        try:
            float(v)
        except (TypeError, ValueError):
            numeric = False
            break
    infos = []
    if numeric:
        for key, (name, color) in labels.styles.items():
            try:
                value = int(float(key))
            except ValueError:
                continue
            if color:
                infos.append(ClassInfo(value, name or f"class {value}", color))
    else:
        names = sorted({str(v).strip() for v in values if str(v).strip()})
        for i, text in enumerate(names):
            if text in labels.styles and labels.styles[text][1]:
                infos.append(ClassInfo(i + 1, labels.styles[text][0] or text, labels.styles[text][1]))
    return infos


def label_samples(labels: LabelGeometries, inputs: Inputs) -> LabelSamples:
    """Training pixels on the HSI grid; pixels where the HSI (or SAR) is nodata are skipped and counted."""
    info = inputs.hsi_info
    reader = inputs.reader
    good = [b for b in range(reader.hsi_bands) if b not in set(info.bad_bands)]

    def valid(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros(rows.size, dtype=bool)
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
            px = reader.read(r, c, 1, 1)[:, 0, 0]
            out[i] = not (np.isnan(px[good]).any() or np.isnan(px[reader.hsi_bands:]).any())
        return out

    infos = _class_infos(labels)
    name = f"the label layer '{labels.layer_name}'"
    has_points = len(labels.point_values) > 0
    has_polys = len(labels.polygon_values) > 0
    if has_polys and not has_points:
        return collect_polygon_labels(labels.polygons_wkb, labels.polygon_values, info, valid, infos,
                                      labels.field_name, name)
    samples = collect_point_labels(labels.xs, labels.ys, labels.point_values, info, valid, infos,
                                   labels.field_name, name)
    if has_polys:  # mixed layer: polygons' pixels join the points
        polys = collect_polygon_labels(labels.polygons_wkb, labels.polygon_values, info, valid, infos,
                                       labels.field_name, name)
        if [c.value for c in polys.classes] != [c.value for c in samples.classes]:
            raise ValueError(f"{name} mixes points and polygons with different class sets: use one geometry type")
        samples = LabelSamples(np.concatenate([samples.rows, polys.rows]), np.concatenate([samples.cols, polys.cols]),
                               np.concatenate([samples.class_index, polys.class_index]), samples.classes,
                               {**samples.report, "polygon_pixels": int(polys.rows.size)})
    return samples


def _label_report_text(report: Dict) -> str:
    parts = [f"{report.get('used', 0)} of {report.get('total', 0)} labels used"]
    for key, text in (("outside_raster", "outside the raster"), ("on_nodata", "on nodata pixels"),
                      ("missing_value", "without a class value"), ("duplicates", "duplicates in one pixel"),
                      ("conflicting", "conflicting classes in one pixel")):
        if report.get(key):
            parts.append(f"{report[key]} {text} (skipped)")
    per = ", ".join(f"{k}: {v}" for k, v in (report.get("per_class") or {}).items())
    return "; ".join(parts) + (f". Per class: {per}" if per else "")


# ---------------------------------------------------------------------------------------------------------
# training

@dataclass
class TrainRequest:
    hsi: str
    sar: Optional[str]
    labels: LabelGeometries
    settings: PipelineSettings
    model_path: Optional[str] = None  # None: the bundle goes to a temporary file
    report_path: Optional[str] = None  # .html or .json: validation metrics on held-out training labels


@dataclass
class TrainOutcome:
    bundle: str
    metadata: Dict
    label_report: Dict
    validation_oa: Optional[float]


def train(request: TrainRequest, progress: Optional[Progress] = None) -> TrainOutcome:
    from .bundle import input_description, save_bundle
    from .pipeline import TrainingPixels, bundle_payload, fit
    from .report import write_accuracy_report

    progress = progress or Progress()
    inputs = open_inputs(request.hsi, request.sar, progress, scan_bands=True)
    progress.check()
    samples = label_samples(request.labels, inputs)
    progress.log(_label_report_text(samples.report))
    pixels = TrainingPixels(samples.rows, samples.cols, samples.class_index, samples.n_classes)
    model = fit(inputs.reader, inputs.hsi_info.meta(), inputs.sar_info.meta() if inputs.sar_info else None,
                pixels, request.settings, progress.sub(0.0, 0.97))
    metadata, tensors = bundle_payload(model)
    metadata.update({
        "classes": [c.to_dict() for c in samples.classes],
        "inputs": {"hsi": input_description(inputs.hsi_info, "hsi"),
                   "sar": input_description(inputs.sar_info, "sar") if inputs.sar_info else None},
        "crs_wkt": inputs.hsi_info.crs_wkt, "pixel_size": list(inputs.hsi_info.pixel_size),
        "seed": request.settings.seed, "labels": samples.report,
    })
    metadata["versions"]["gdal"] = _gdal_version()
    bundle = request.model_path or os.path.join(tempfile.mkdtemp(prefix="difflc-"), "model.difflc")
    save_bundle(bundle, metadata, tensors)
    val = (model.report or {}).get("validation") or {}
    if val:
        progress.log(f"Validation on held-out training labels: OA {100 * val.get('overall_accuracy', 0):.2f} %, "
                     f"kappa {val.get('kappa', 0):.3f}, mIoU {100 * val.get('mean_iou', 0):.2f} % "
                     f"({val.get('n_samples', 0)} pixels)")
    if request.report_path:
        _write_training_report(request.report_path, val, metadata)
    progress.report(1.0)
    return TrainOutcome(bundle, metadata, samples.report, val.get("overall_accuracy"))


def _write_training_report(path: str, validation: Dict, metadata: Dict) -> None:
    from .report import write_accuracy_report

    extra = {"labels": metadata.get("labels"), "backbone": metadata.get("backbone", {}).get("kind"),
             "training": {k: v for k, v in (metadata.get("training") or {}).items() if k != "validation"},
             "note": "validation pixels are a stratified split of the TRAINING labels, not independent reference"}
    html = path if path.lower().endswith((".html", ".htm")) else None
    write_accuracy_report(validation or {}, html_path=html, json_path=None if html else path,
                          title="Training report (validation on held-out training labels)", extra=extra)


def _gdal_version() -> str:
    from osgeo import gdal

    return gdal.__version__


# ---------------------------------------------------------------------------------------------------------
# classification

@dataclass
class ClassifyOutcome:
    output: str
    confidence: Optional[str]
    class_pixels: Dict[str, int]


def classify(bundle_path: str, hsi: str, sar: Optional[str], output: str, confidence: Optional[str] = None,
             progress: Optional[Progress] = None, device: str = "auto",
             checkpoint: Optional[str] = None) -> ClassifyOutcome:
    from .bundle import check_inputs, load_bundle
    from .pipeline import from_bundle, predict_scene
    from .raster_io import ClassifiedWriter

    progress = progress or Progress()
    metadata, tensors = load_bundle(bundle_path)
    inputs = open_inputs(hsi, sar, progress)
    check_inputs(metadata, inputs.hsi_info, inputs.sar_info)
    model = from_bundle(metadata, tensors, device=device, checkpoint=checkpoint)
    classes = [ClassInfo.from_dict(c) for c in metadata["classes"]]
    values = np.array([c.value for c in classes], dtype=np.int64)
    counts = np.zeros(len(classes), dtype=np.int64)
    progress.log(f"Classifying {inputs.hsi_info.width}x{inputs.hsi_info.height} pixels into {len(classes)} classes "
                 f"in {model.settings.tiles.patch}-pixel tiles (stride {model.settings.tiles.stride})")
    with ClassifiedWriter(output, inputs.hsi_info, classes, confidence) as writer:
        def write(row: int, index: np.ndarray, conf: np.ndarray) -> None:
            out = np.where(index >= 0, values[np.clip(index, 0, None)], -1)
            counts[:] += np.bincount(index[index >= 0], minlength=len(classes))
            writer.write(row, 0, out, conf if confidence else None)

        predict_scene(model, inputs.reader, write, progress)
    return ClassifyOutcome(output, confidence, {c.name: int(n) for c, n in zip(classes, counts)})
