"""File side of the objects route (issue 21): segment a scene into polygons; train and apply an object classifier.

The science is ``engine.tasks.objects`` (SLIC streamed without seams, per-object pooling) on the land-cover
pieces (``landcover.fit_scene_representations`` / ``prepare_backbone`` / ``head_inputs``, ``heads.fit_head``,
``tiling``); OGR work is ``engine.data.vectors``. Every output is written to a temporary beside it and moved into
place when complete; the id raster the pooling reads lives in a private temporary folder removed at the end.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import files
from ..errors import UserInputError
from ..progress import Progress
from ..settings import PipelineSettings
from . import LabelGeometries, MaskSpec, _class_infos, _gdal_version, open_inputs, require_georeferencing


@contextlib.contextmanager
def _scratch():
    folder = tempfile.mkdtemp(prefix="difflc-objects-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mean_pixel_m2(info) -> Optional[float]:
    from ..data.raster_io import pixel_area

    areas = pixel_area(info)
    return float(np.mean(areas.row_area)) if areas.row_area is not None else None


# ---------------------------------------------------------------------------------------------------------
# segmentation (difflc:segmentobjects)

@dataclass
class SegmentRequest:
    hsi: str
    sar: Optional[str]
    output: str  # .gpkg
    settings: PipelineSettings  # representations (RGB bands, SAR units) and seed
    object_area_m2: Optional[float] = None  # target object size as an area (needs a CRS) ...
    object_pixels: Optional[float] = None  # ... or in pixels
    compactness: float = 1.0
    mask: Optional[MaskSpec] = None
    window_rows: Optional[int] = None  # tests: force several windows on a small scene


@dataclass
class SegmentOutcome:
    output: str
    objects: int
    polygons: int
    cut_objects: int
    repaired: int
    target_pixels: float
    windows: int
    seconds: float


def segment_objects(request: SegmentRequest, progress: Optional[Progress] = None) -> SegmentOutcome:
    """Raster (+ SAR, MASK) → GeoPackage of homogeneous regions (object_id, pixels, area_m2, area_ha)."""
    from ..data.raster_io import pixel_area
    from ..data.vectors import id_raster, polygonize_ids
    from ..tasks.landcover import fit_scene_representations
    from ..tasks.objects import SegmentSettings, segment_scene

    progress = progress or Progress()
    t0 = time.perf_counter()
    inputs = open_inputs(request.hsi, request.sar, progress.sub(0.0, 0.03), scan_bands=True, mask=request.mask)
    info = inputs.hsi_info
    if not (request.object_pixels or request.object_area_m2):
        raise UserInputError("give the target object size (an area in m² or ha, or a number of pixels)")
    if request.object_pixels:
        target = float(request.object_pixels)
    else:
        pixel_m2 = _mean_pixel_m2(info)
        if pixel_m2 is None:
            raise UserInputError(f"the raster {os.path.basename(request.hsi)} has no CRS, so an object size in m² or "
                                 "ha cannot be turned into pixels: give the size in pixels, or assign its CRS")
        target = float(request.object_area_m2) / pixel_m2
    if target < 4:
        raise UserInputError(f"the target object size is {target:.2g} pixels: an object needs at least 4 pixels; "
                             "give a larger size")
    reps = fit_scene_representations(inputs.reader, info.meta(), inputs.sar_info.meta() if inputs.sar_info else None,
                                     request.settings, progress.sub(0.03, 0.08))
    seg = SegmentSettings(target, request.compactness, window_rows=request.window_rows)
    progress.log(f"Segmentation: SLIC (Achanta et al. 2012) on {', '.join(reps.modalities)}, target "
                 f"{target:,.1f} pixels per object, compactness {request.compactness:g}")
    row_area = pixel_area(info).row_area
    areas = np.zeros(1, np.float64)
    result = None
    with _scratch() as folder:
        ids_path = os.path.join(folder, "ids.tif")

        def fill(band) -> None:
            nonlocal result, areas

            def write(row: int, ids: np.ndarray) -> None:
                nonlocal areas
                band.WriteArray(ids.astype(np.int32), 0, row)
                if row_area is not None and ids.size:
                    top = int(ids.max())
                    if top >= areas.size:
                        areas = np.concatenate([areas, np.zeros(top + 1 - areas.size)])
                    weights = np.broadcast_to(row_area[row:row + ids.shape[0], None], ids.shape)
                    areas[:top + 1] += np.bincount(ids.ravel(), weights=weights.ravel(), minlength=top + 1)

            result = segment_scene(inputs.reader, reps, seg, write, progress.sub(0.08, 0.8))

        id_raster(ids_path, info, fill)
        if result.n_objects == 0:
            raise UserInputError(f"the raster {os.path.basename(request.hsi)} has no valid pixel to segment (all "
                                 "nodata, or outside the mask)")
        per_object = None
        if row_area is not None:
            per_object = np.zeros(result.n_objects)
            per_object[:min(areas.size - 1, result.n_objects)] = areas[1:result.n_objects + 1]
        layer = os.path.splitext(os.path.basename(request.output))[0] or "objects"
        with files.atomic_path(request.output, suffix=".gpkg") as tmp:
            stats = polygonize_ids(ids_path, tmp, layer, result.pixels, per_object, progress.sub(0.8, 1.0))
    if result.cut_objects:
        progress.log(f"{result.cut_objects} object(s) were cut at a window edge (they would have held back more "
                     "than half a window of rows)")
    if stats.repaired:
        progress.log(f"{stats.repaired} polygon(s) repaired with MakeValid")
    outcome = SegmentOutcome(request.output, result.n_objects, stats.polygons, result.cut_objects,
                             stats.repaired, target, len(result.windows), round(time.perf_counter() - t0, 2))
    progress.log(f"{outcome.objects:,} objects → {outcome.polygons:,} polygons in {outcome.seconds:.1f} s "
                 f"({len(result.windows)} windows)")
    progress.report(1.0)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# object classification (difflc:trainobjectclassifier / classifyobjects / trainandclassifyobjects)

@dataclass
class PolygonInput:
    """A polygon layer given to the objects route: its OGR source ('file.gpkg|layername=x'), name, class field."""

    source: str
    name: str
    class_field: Optional[str] = None
    styles: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)  # from its categorized renderer


@dataclass
class PointLabels:
    """Label points (any CRS) whose majority class labels the polygon that holds them."""

    source: str
    name: str
    class_field: str
    styles: Dict[str, Tuple[str, Optional[str]]] = field(default_factory=dict)


@dataclass
class ObjectTrainRequest:
    hsi: str
    sar: Optional[str]
    polygons: PolygonInput
    settings: PipelineSettings
    points: Optional[PointLabels] = None  # labels as points instead of the polygons' class field
    model_path: Optional[str] = None
    report_path: Optional[str] = None
    save: bool = True


@dataclass
class ObjectTrainOutcome:
    bundle: Optional[str]
    metadata: Dict
    validation_oa: Optional[float]
    label_report: Dict
    model: Optional[object] = None  # landcover.FittedModel (head on object features)


@dataclass
class Pooled:
    """What the pooling of one polygon layer on one scene gives (reused by the one-step algorithm)."""

    features: object  # tasks.objects.ObjectFeatures
    burnt: np.ndarray  # pixel centres per object on the raster (0: outside it, or an empty geometry)
    polygons: object  # data.vectors.PolygonSource


def _require_polygons_label_field(values: List, spec: PolygonInput) -> None:
    if all(v is None for v in values):
        raise UserInputError(f"the field '{spec.class_field}' of the polygon layer '{spec.name}' is NULL or empty "
                             "on every polygon: fill in the class of some polygons, or give label points")


def object_labels(polys, request: ObjectTrainRequest, info, progress: Optional[Progress] = None) -> Tuple[np.ndarray, List, Dict]:
    """(class index per object (-1 = unlabelled), ClassInfo list, report) from the polygons' field or points."""
    from ..data.labels import LabelError, class_codes
    from ..data.vectors import points_in_polygons
    from ..tasks.objects import majority_labels

    report: Dict = {}
    if request.points is not None:
        p = request.points
        where, values = points_in_polygons(polys, p.source, p.name, p.class_field, info, progress)
        if not values:
            raise UserInputError(f"the field '{p.class_field}' of the label layer '{p.name}' is NULL or empty on "
                                 "every point: fill in the classes")
        codes, class_values, names = class_codes(values, p.class_field, f"the label layer '{p.name}'")
        lookup = {v: i for i, v in enumerate(class_values)}
        point_class = np.array([lookup[int(c)] for c in codes], np.int64)
        maj = majority_labels(where, point_class, polys.n)
        index = maj.index
        report.update({"points": len(values), "points_outside_polygons": maj.points_outside, "ties": maj.ties,
                       "conflicts": maj.conflicts})
        field_name, layer_name, styles, raw = p.class_field, p.name, p.styles, values
    else:
        spec = request.polygons
        _require_polygons_label_field(polys.values, spec)
        codes, class_values, names = class_codes(polys.values, spec.class_field, f"the polygon layer '{spec.name}'")
        lookup = {v: i for i, v in enumerate(class_values)}
        index = np.array([-1 if np.isnan(c) else lookup[int(c)] for c in codes], np.int64)
        field_name, layer_name, styles, raw = spec.class_field, spec.name, spec.styles, polys.values
    geoms = LabelGeometries(layer_name, field_name, np.zeros(0), np.zeros(0), [],
                            polygon_values=[v for v in raw if v is not None], styles=styles)
    infos = {c.value: c for c in _class_infos(geoms)}
    from ..data.labels import ClassInfo, default_colors

    palette = default_colors(len(class_values))
    classes = [infos.get(v) or ClassInfo(int(v), names[i] if names else f"class {v}", palette[i])
               for i, v in enumerate(class_values)]
    if len(classes) < 2:
        raise LabelError(f"the field '{field_name}' of the layer '{layer_name}' holds only one class "
                         f"('{classes[0].name}'): an object classifier needs at least two classes")
    report.update({"layer": layer_name, "field": field_name, "labelled_objects": int((index >= 0).sum())})
    return index, classes, report


def _centroid_inputs(polys, need: np.ndarray, inputs, reps, extractor, settings, progress) -> Dict[int, np.ndarray]:
    """Head inputs at the centroid pixel of each object in ``need`` (objects with no pixel centre inside)."""
    from ..data.labels import map_to_pixel
    from ..tasks.landcover import TrainingPixels, labelled_features

    which = np.flatnonzero(need & np.isfinite(polys.centroids).all(axis=1))
    if not which.size:
        return {}
    reader = inputs.reader
    rows, cols = map_to_pixel(polys.centroids[which, 0], polys.centroids[which, 1], inputs.hsi_info.geotransform)
    inside = (rows >= 0) & (rows < reader.height) & (cols >= 0) & (cols < reader.width)
    which, rows, cols = which[inside], rows[inside], cols[inside]
    ok = np.array([not np.isnan(reps.spectrum(*reader.split(reader.read(int(r), int(c), 1, 1)))).any()
                   for r, c in zip(rows, cols)], bool)
    which, rows, cols = which[ok], rows[ok], cols[ok]
    if not which.size:
        return {}
    x = labelled_features(reader, reps, extractor, TrainingPixels(rows, cols, np.zeros(rows.size, np.int64), 1),
                          settings, progress)
    return {int(i): x[k] for k, i in enumerate(which)}


def _burn(polys, inputs, folder: str, progress: Progress):
    from ..data.vectors import IdReader, burn_ids

    ids_path = os.path.join(folder, "ids.tif")
    burn_ids(polys, inputs.hsi_info, ids_path, progress)
    return IdReader(ids_path)


def pool_layer(inputs, polys, reps, extractor, settings: PipelineSettings, run_network: bool,
               wanted: Optional[np.ndarray], progress: Progress) -> Pooled:
    """Burn the polygons' ids on the raster grid (a temporary GeoTIFF), pool every object's pixels, and let
    objects without a pixel centre inside use the pixel under their centroid. Keeps every object's inputs (what
    training needs); classification streams instead (``predict_layer``)."""
    from ..tasks.objects import object_features, object_group_sizes, pool_objects

    group_sizes = object_group_sizes(extractor.groups, reps.spectrum_dim)
    with _scratch() as folder:
        ids = _burn(polys, inputs, folder, progress.sub(0.0, 0.05))
        try:
            pooler = pool_objects(inputs.reader, ids, polys.n, reps, extractor, settings.tiles,
                                  run_network=run_network, wanted=None if wanted is None else np.append(False, wanted),
                                  batch_size=settings.features.batch_size, progress=progress.sub(0.05, 0.9))
            burnt, _ = _burnt_counts(ids, polys.n, progress)
        finally:
            ids.close()
    need = (pooler.count[1:] == 0) & (burnt == 0)
    if wanted is not None:
        need &= wanted
    centroid = _centroid_inputs(polys, need, inputs, reps, extractor, settings, progress.sub(0.9, 1.0)) \
        if need.any() else {}
    return Pooled(object_features(pooler, extractor.dim, group_sizes, centroid), burnt, polys)


@dataclass
class LayerPredictions:
    """Per polygon of one layer on one scene: the head's predictions and what the log and the fields report."""

    predictions: object  # tasks.objects.ObjectPredictions
    pixels: np.ndarray  # valid pixels pooled
    subpixel: np.ndarray  # bool: classified from the pixel under its centroid
    burnt: np.ndarray  # pixel centres on the raster (0: outside it, or an empty geometry)
    polygons: object  # data.vectors.PolygonSource


def predict_layer(inputs, polys, model, run_network: bool, progress: Progress) -> LayerPredictions:
    """Classify every polygon while its pixels stream past: an object is pooled, classified and let go as soon as
    the rows below it start, so memory follows the objects crossing the rows being read, not the layer's size."""
    from ..tasks.objects import ObjectPredictor, assemble, pool_objects

    predictor = ObjectPredictor(model.head, polys.n, model.extractor.dim)
    with _scratch() as folder:
        ids = _burn(polys, inputs, folder, progress.sub(0.0, 0.05))
        try:
            burnt, last_row = _burnt_counts(ids, polys.n, progress)
            pooler = pool_objects(inputs.reader, ids, polys.n, model.representations, model.extractor,
                                  model.settings.tiles, run_network=run_network,
                                  batch_size=model.settings.features.batch_size, progress=progress.sub(0.05, 0.9),
                                  last_row=last_row, on_closed=predictor)
        finally:
            ids.close()
    pixels = pooler.count[1:].copy()
    need = (pixels == 0) & (burnt == 0)
    subpixel = np.zeros(polys.n, bool)
    if need.any():
        centroid = _centroid_inputs(polys, need, inputs, model.representations, model.extractor, model.settings,
                                    progress.sub(0.9, 1.0))
        if centroid:
            which = np.array(sorted(centroid), np.int64)
            v = np.stack([np.asarray(centroid[i], np.float64) for i in which])
            ok = np.isfinite(v).all(axis=1)
            which, v = which[ok], v[ok]
            if which.size:
                predictor.predict(which, assemble(v, np.zeros_like(v), model.extractor.dim))
                subpixel[which] = True
    return LayerPredictions(predictor.result(), pixels, subpixel, burnt, polys)


def _burnt_counts(ids, n: int, progress: Progress) -> Tuple[np.ndarray, np.ndarray]:
    """(pixel centres per object [n], each object's last row [n + 1], -1 = none) in one pass over the id raster."""
    from ..data.readers import row_blocks

    counts = np.zeros(n + 1, np.int64)
    last = np.full(n + 1, -1, np.int64)
    for row, rows in row_blocks(ids.height, ids.width, itemsize=8):
        block = ids.read_ids(row, 0, rows, ids.width)
        flat = np.clip(block.ravel(), 0, n)
        counts += np.bincount(flat, minlength=n + 1)
        uniq, first_from_end = np.unique(flat[::-1], return_index=True)
        last[uniq] = row + (flat.size - 1 - first_from_end) // ids.width
        progress.check()
    last[0] = -1
    return counts[1:], last


def _polygon_log(polys, progress: Progress) -> None:
    for count, text in ((polys.repaired, "invalid geometries repaired with MakeValid"),
                        (polys.empty, "empty geometries (kept with a NULL class)"),
                        (polys.not_polygons, "features that are not polygons (kept with a NULL class)")):
        if count:
            progress.log(f"Polygon layer '{polys.layer_name}': {count} {text}")


def train_objects(request: ObjectTrainRequest, progress: Optional[Progress] = None) -> ObjectTrainOutcome:
    """Labelled polygons → object classifier (representations, network, head on pooled [mean, std] features)."""
    import dataclasses

    from .bundle import input_description, save_bundle
    from ..data.vectors import read_polygons
    from ..heads.classifier import fit_head
    from ..networks.device import resolve_device
    from ..networks.features import FeatureExtractor
    from ..tasks.landcover import (FittedModel, active_modalities, bundle_payload, fit_scene_representations,
                                   prepare_backbone)
    from ..tasks.objects import OBJECT_FORMAT, STATISTICS

    progress = progress or Progress()
    t0 = time.perf_counter()
    settings = dataclasses.replace(request.settings, head=dataclasses.replace(request.settings.head,
                                                                              include_spectrum=True))
    inputs = open_inputs(request.hsi, request.sar, progress.sub(0.0, 0.03), scan_bands=True)
    info = inputs.hsi_info
    require_georeferencing(info, "HSI", f"the polygon layer '{request.polygons.name}'")
    polys = read_polygons(request.polygons.source, request.polygons.name, info,
                          request.polygons.class_field if request.points is None else None, progress.sub(0.03, 0.05))
    _polygon_log(polys, progress)
    index, classes, report = object_labels(polys, request, info, progress)
    reps = fit_scene_representations(inputs.reader, info.meta(), inputs.sar_info.meta() if inputs.sar_info else None,
                                     settings, progress.sub(0.05, 0.08))
    backbone = prepare_backbone(inputs.reader, reps, settings, progress.sub(0.08, 0.4))
    device = resolve_device(settings.device)
    extractor = FeatureExtractor(backbone.model, settings.features,
                                 active_modalities(settings, inputs.reader.sar is not None), device)
    labelled = index >= 0
    pooled = pool_layer(inputs, polys, reps, extractor, settings, True, labelled,
                        progress.sub(0.4, 0.85))
    feats = pooled.features
    use = labelled & feats.usable
    report.update({"labelled_without_pixels": int((labelled & ~feats.usable).sum()),
                   "subpixel": int((use & feats.subpixel).sum()), "used": int(use.sum())})
    per_class = np.bincount(index[use], minlength=len(classes))
    report["per_class"] = {c.name: int(n) for c, n in zip(classes, per_class)}
    few = [f"'{c.name}' ({int(n)})" for c, n in zip(classes, per_class) if n < 2]
    if few:
        raise UserInputError(f"class {', '.join(few)} of the field '{report['field']}' of '{report['layer']}' has "
                             "fewer than 2 labelled objects with valid pixels: label more objects of that class")
    progress.log(f"Labelled objects: {report['used']} used ({', '.join(f'{k}: {v}' for k, v in report['per_class'].items())})"
                 + (f"; {report['labelled_without_pixels']} labelled objects without valid pixels skipped"
                    if report["labelled_without_pixels"] else "")
                 + (f"; {report['subpixel']} smaller than a pixel (their centroid pixel used)" if report["subpixel"]
                    else "")
                 + (f"; {report['ties']} tied and {report['conflicts']} conflicting objects among the label points"
                    if "ties" in report else ""))
    head = fit_head(feats.x[use], index[use], feats.group_sizes, settings.head, seed=settings.seed, device="cpu",
                    progress=progress.sub(0.85, 0.97), fusion=settings.features.fusion, n_classes=len(classes),
                    spectrum_last=True)
    val = getattr(head, "val_metrics", None) or {}
    training = {"objects": int(use.sum()), "feature_dim": int(feats.x.shape[1]), "validation": val or None,
                "feature_check": head.config.get("feature_check"), "seconds": round(time.perf_counter() - t0, 1),
                "device": str(device)}
    model = FittedModel(settings, reps, backbone.model, backbone.info, backbone.tensors, extractor, head,
                        list(feats.group_sizes), training)
    metadata, tensors = bundle_payload(model)
    metadata.update({
        "format": OBJECT_FORMAT, "classes": [c.to_dict() for c in classes],
        "inputs": {"hsi": input_description(info, "hsi"),
                   "sar": input_description(inputs.sar_info, "sar") if inputs.sar_info else None},
        "crs_wkt": info.crs_wkt, "pixel_size": list(info.pixel_size), "seed": settings.seed, "labels": report,
        "objects": {"statistics": list(STATISTICS), "n_diffusion": int(extractor.dim),
                    "spectrum_dim": int(reps.spectrum_dim)},
    })
    metadata["versions"]["gdal"] = _gdal_version()
    bundle = None
    if request.model_path or request.save:
        bundle = request.model_path or os.path.join(tempfile.mkdtemp(prefix="difflc-"), "model.difflc")
        save_bundle(bundle, metadata, tensors)
    if val:
        progress.log(f"Validation (out-of-bag on the labelled objects): OA {100 * val.get('overall_accuracy', 0):.2f} %"
                     f", kappa {val.get('kappa', 0):.3f} ({val.get('n_samples', 0)} objects)")
    if request.report_path:
        from .report import write_accuracy_report

        html = request.report_path if request.report_path.lower().endswith((".html", ".htm")) else None
        write_accuracy_report(val or {}, html_path=html, json_path=None if html else request.report_path,
                              title="Object classifier: training report (out-of-bag on the labelled objects)",
                              extra={"labels": report, "training": {k: v for k, v in training.items()
                                                                    if k != "validation"}})
    progress.report(1.0)
    return ObjectTrainOutcome(bundle, metadata, val.get("overall_accuracy"), report, model)


@dataclass
class ObjectClassifyOutcome:
    output: str
    class_objects: Dict[str, int]
    null_objects: int
    subpixel_objects: int
    seconds: float


def classify_objects(bundle_path: Optional[str], hsi: str, sar: Optional[str], polygons: PolygonInput, output: str,
                     progress: Optional[Progress] = None, device: str = "auto", checkpoint: Optional[str] = None,
                     trained: Optional[ObjectTrainOutcome] = None) -> ObjectClassifyOutcome:
    """A copy of the polygon layer with class, class name, confidence and one probability per class, styled."""
    from .bundle import BundleError, check_inputs, load_bundle, validate_model
    from ..data.labels import ClassInfo
    from ..data.vectors import PredictionFields, categorized_qml, read_polygons, write_classified_copy
    from ..tasks.landcover import first_read_column, from_bundle
    from ..tasks.objects import OBJECT_FORMAT

    progress = progress or Progress()
    t0 = time.perf_counter()
    in_memory = trained is not None and trained.model is not None
    if in_memory:
        metadata = trained.metadata
    else:
        metadata, tensors = load_bundle(bundle_path, formats=(OBJECT_FORMAT,))
        validate_model(metadata, bundle_path)
    inputs = open_inputs(hsi, sar, progress.sub(0.0, 0.03))
    check_inputs(metadata, inputs.hsi_info, inputs.sar_info)
    require_georeferencing(inputs.hsi_info, "HSI", f"the polygon layer '{polygons.name}'")
    try:
        model = trained.model if in_memory else from_bundle(metadata, tensors, device=device, checkpoint=checkpoint)
        classes = [ClassInfo.from_dict(c) for c in metadata["classes"]]
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BundleError(f"the model file {bundle_path} was edited or is incomplete ({type(exc).__name__}: "
                          f"{exc}): restore the original file or retrain") from None
    polys = read_polygons(polygons.source, polygons.name, inputs.hsi_info, None, progress.sub(0.03, 0.05))
    _polygon_log(polys, progress)
    run_network = first_read_column(model.head, True) == 0
    done = predict_layer(inputs, polys, model, run_network, progress.sub(0.05, 0.9))
    polys, pred = done.polygons, done.predictions
    values = np.array([c.value for c in classes], np.int64)
    out_values = np.where(pred.index >= 0, values[np.clip(pred.index, 0, None)], -1)
    notes = ["subpixel" if s else "" for s in done.subpixel]
    for i in np.flatnonzero(pred.index < 0):
        notes[i] = "no data" if done.burnt[i] > 0 else "outside the raster or empty"
    fields = PredictionFields(out_values, [classes[k].name if k >= 0 else None for k in pred.index], pred.confidence,
                              pred.probabilities, done.pixels, notes, [c.name for c in classes])
    layer = os.path.splitext(os.path.basename(output))[0] or "objects"
    qml_path = os.path.splitext(output)[0] + ".qml"
    tmp = files.temp_beside(output, ".gpkg")
    qml_tmp = files.temp_beside(qml_path, ".qml")
    try:
        names = write_classified_copy(polys.source, tmp, layer, fields, classes, progress.sub(0.9, 0.99))
        with open(qml_tmp, "w", encoding="utf-8") as fh:
            fh.write(categorized_qml(names.class_value, classes))
        moves = [(tmp, output)]
        if files.is_own_sidecar(qml_path):
            moves.append((qml_tmp, qml_path))
        else:
            progress.log(f"{qml_path} is a style you made: kept (the style is stored in the GeoPackage too)")
            files.discard(qml_tmp)
        files.commit_all(moves)
    except BaseException:
        files.discard(tmp, qml_tmp)
        raise
    nulls = int((pred.index < 0).sum())
    counts = np.bincount(pred.index[pred.index >= 0], minlength=len(classes))
    if nulls:
        outside = int(((pred.index < 0) & (done.burnt == 0)).sum())
        progress.log(f"{nulls} polygon(s) kept with a NULL class: {outside} outside the raster (or empty, or smaller "
                     f"than a pixel over nodata), {nulls - outside} only on nodata pixels")
    sub = int((done.subpixel & (pred.index >= 0)).sum())
    if sub:
        progress.log(f"{sub} polygon(s) smaller than a pixel: classified from the pixel under the centroid "
                     "(obj_note = 'subpixel')")
    return ObjectClassifyOutcome(output, {c.name: int(n) for c, n in zip(classes, counts)}, nulls, sub,
                                 round(time.perf_counter() - t0, 2))


# ---------------------------------------------------------------------------------------------------------
# accuracy by object and by area (difflc:accuracy with a classified polygon layer)

def assess_objects(source: str, layer_name: str, map_field: str, reference_field: str,
                   names: Optional[Dict[int, str]] = None, html: Optional[str] = None,
                   json_path: Optional[str] = None, progress: Optional[Progress] = None) -> Dict:
    """Confusion matrix of a classified polygon layer's ``map_field`` against its ``reference_field``, counted by
    object (the report's main matrix) and weighted by area (``metrics["by_area"]``: area-weighted OA, kappa,
    per-class F1). Polygons without a map class or a reference are left out and counted."""
    from ..assessment.metrics import metrics_from_confusion
    from ..data.vectors import read_object_table
    from .report import write_accuracy_report

    progress = progress or Progress()
    table = read_object_table(source, layer_name, map_field, reference_field)
    pred, ref, area, unit, skipped = table.predicted, table.reference, table.area, table.unit, table.skipped
    if not pred:
        raise UserInputError(f"no polygon of '{layer_name}' has both a '{map_field}' and a '{reference_field}' value: "
                             "fill in the reference field, or choose the fields again")
    try:
        p = np.array([int(float(v)) for v in pred], np.int64)
        r = np.array([int(float(v)) for v in ref], np.int64)
    except (TypeError, ValueError):
        raise UserInputError(f"the fields '{map_field}' and '{reference_field}' of '{layer_name}' must hold class "
                             "values (integers), not text: use the 'class' field of Classify objects and a reference "
                             "field with the same values") from None
    values = sorted(set(p.tolist()) | set(r.tolist()))
    index = {v: i for i, v in enumerate(values)}
    k = len(values)
    counts = np.zeros((k, k), np.int64)
    areas = np.zeros((k, k), np.float64)
    ri, pi = np.array([index[v] for v in r]), np.array([index[v] for v in p])
    np.add.at(counts, (ri, pi), 1)
    np.add.at(areas, (ri, pi), area)
    labels = [(names or {}).get(v, f"class {v}") for v in values]
    metrics = metrics_from_confusion(counts, labels)
    metrics["class_values"] = values
    by_area = metrics_from_confusion(areas, labels)
    scale, shown = (1e-4, "ha") if unit == "m2" else (1.0, unit)
    metrics["by_area"] = {
        "unit": shown, "overall_accuracy": by_area["overall_accuracy"], "kappa": by_area["kappa"],
        "mean_f1": by_area["mean_f1"], "total_area": float(areas.sum() * scale),
        "per_class": [{"name": c["name"], "f1": c["f1"], "precision": c["precision"], "recall": c["recall"],
                       "reference_area": float(areas[i].sum() * scale), "map_area": float(areas[:, i].sum() * scale)}
                      for i, c in enumerate(by_area["per_class"])],
        "confusion_matrix": (areas * scale).tolist()}
    metrics["objects"] = {"assessed": int(p.size), "left_out": int(skipped)}
    if skipped:
        progress.log(f"{skipped} polygon(s) without a map class or a reference left out")
    extra = {"layer": layer_name, "map_field": map_field, "reference_field": reference_field,
             "polygons_assessed": int(p.size), "polygons_left_out": int(skipped)}
    write_accuracy_report(metrics, html_path=html, json_path=json_path, title="Accuracy assessment (objects)",
                          extra=extra)
    return metrics
