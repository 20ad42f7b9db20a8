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
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError
from ..data.labels import (ClassInfo, LabelError, LabelSamples, class_codes, collect_point_labels,
                           collect_polygon_labels, default_colors, reader_valid_fn)
from ..progress import Progress
from ..data.raster_io import RasterInfo, RasterReader, category_names, mask_reader, scan_bad_bands
from ..data.readers import MaskedReader, StackedReader, row_blocks
from ..settings import CleanupSettings, PipelineSettings


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
class MaskSpec:
    """Where the model may train and predict: a raster (nonzero = inside) or polygons (WKB in the HSI CRS)."""

    name: str
    raster: Optional[str] = None
    polygons_wkb: List[bytes] = field(default_factory=list)


@dataclass
class Inputs:
    hsi_info: RasterInfo
    sar_info: Optional[RasterInfo]
    reader: StackedReader
    sar_coverage: Optional[float] = None  # share of the HSI grid where every SAR band has data (when scanned)
    mask: Optional[object] = None  # one-band reader of the MASK on the HSI grid (nonzero = inside)


def has_georeferencing(info: RasterInfo) -> bool:
    """GDAL reports (0, 1, 0, 0, 0, 1) and no CRS for a plain image: map coordinates cannot be placed on it."""
    return bool(info.crs_wkt) or tuple(info.geotransform) != (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def require_georeferencing(info: RasterInfo, role: str, what: str) -> None:
    if not has_georeferencing(info):
        raise UserInputError(
            f"the {role} raster {os.path.basename(info.path)} has no georeferencing (no CRS and no geotransform), "
            f"so {what} cannot be placed on it: georeference it (Raster ▸ Georeferencer, or Assign Projection "
            "for a raster that has coordinates), then run again")


def _sar_coverage(sar: RasterReader, hsi: RasterReader, progress: Progress, block_rows: int = 256) -> float:
    """Share of valid HSI pixels where the SAR has data; refuses a SAR band with no data at all over the HSI."""
    sar_bands_seen = np.zeros(sar.band_count, dtype=bool)
    both = hsi_valid = 0
    for row, rows in row_blocks(sar.height, sar.width, sar.band_count + hsi.band_count, max_rows=block_rows):
        s = ~np.isnan(sar.read(row, 0, rows, sar.width))
        sar_bands_seen |= s.any(axis=(1, 2))
        h = ~np.isnan(hsi.read(row, 0, rows, hsi.width)).all(axis=0)
        hsi_valid += int(h.sum())
        both += int((h & s.all(axis=0)).sum())
        progress.step((row + rows) / sar.height)
    if not sar_bands_seen.all():
        empty = ", ".join(str(b + 1) for b in np.flatnonzero(~sar_bands_seen))
        raise UserInputError(
            f"the SAR raster {os.path.basename(sar.info.path)} has no valid pixel over the HSI scene in band(s) "
            f"{empty} (all nodata{' after resampling onto the HSI grid' if sar.warped else ''}): check its nodata "
            "value and that it covers the HSI, or leave SAR empty")
    return both / max(hsi_valid, 1)


def _mask_share(inside, progress: Progress, block_rows: int = 256) -> float:
    """Share of the scene inside the mask, read block by block (also rejects a mask that misses the scene)."""
    count = 0
    for row, rows in row_blocks(inside.height, inside.width, max_rows=block_rows):
        count += int(np.isfinite(inside.read(row, 0, rows, inside.width)).sum())
        progress.check()
    return count / float(inside.height * inside.width)


def open_inputs(hsi_path: str, sar_path: Optional[str], progress: Progress, scan_bands: bool = False,
                mask: Optional[MaskSpec] = None) -> Inputs:
    """Readers for the HSI and (warped onto its grid) SAR; optionally finds all-nodata HSI bands and measures
    how much of the scene the SAR covers (a SAR with holes silently costs labels otherwise). With ``mask`` the HSI
    reads NaN outside it (``readers.MaskedReader``): everything downstream treats outside as nodata."""
    hsi = RasterReader(hsi_path, log=progress.log, name="HSI")
    if hsi.band_count < 3:
        raise ValueError(f"the HSI raster {os.path.basename(hsi_path)} has {hsi.band_count} band(s): at least 3 "
                         "are needed (pseudo-RGB and PCA are built from them)")
    sar = (RasterReader(sar_path, ref=hsi.info, log=progress.log, name="SAR", ref_name="HSI", complex_amplitude=True)
           if sar_path else None)
    if scan_bands:
        empty = scan_bad_bands(hsi, progress=progress)
        extra = sorted(set(empty) - set(hsi.info.bad_bands))
        if extra:
            progress.log(f"HSI bands without any valid pixel, left out: {', '.join(str(b + 1) for b in extra)}")
            hsi.info.bad_bands = sorted(set(hsi.info.bad_bands) | set(extra))
    inside = None
    if mask is not None:
        if mask.polygons_wkb or mask.raster:
            require_georeferencing(hsi.info, "HSI", f"the mask '{mask.name}'")
        inside = mask_reader(hsi.info, mask.raster, mask.polygons_wkb, log=progress.log)
        share = _mask_share(inside, progress)
        if share == 0.0:
            raise UserInputError(f"the mask '{mask.name}' covers no pixel of the HSI raster "
                                 f"{os.path.basename(hsi_path)}: check that it lies over the scene (its CRS and "
                                 "extent), or leave MASK empty")
        hsi = MaskedReader(hsi, inside)
        progress.log(f"Mask '{mask.name}' covers {100 * share:.1f} % of the scene: training and prediction only "
                     "inside it; outside is nodata in every output")
    coverage = None
    if scan_bands and sar is not None:
        coverage = _sar_coverage(sar, hsi, progress)
        if coverage < 0.995:
            progress.log(f"The SAR raster {os.path.basename(sar_path)} covers {100 * coverage:.0f} % of the HSI "
                         "scene: pixels without SAR stay unclassified (nodata) and labels there are skipped")
    return Inputs(hsi.info, sar.info if sar else None, StackedReader(hsi, sar), coverage, inside)


def _class_infos(labels: LabelGeometries) -> List[ClassInfo]:
    """ClassInfo for every styled class, coded as ``labels.class_codes`` codes the values (ints, or text → 1..K)."""
    if not labels.styles:
        return []
    _, _, names = class_codes(list(labels.point_values) + list(labels.polygon_values), labels.field_name,
                              labels.layer_name)
    pairs = []  # (code, style key)
    if names is None:
        for key in labels.styles:
            try:
                pairs.append((int(float(key)), key))
            except ValueError:
                continue
    else:
        pairs = [(i + 1, text) for i, text in enumerate(names) if text in labels.styles]
    pairs.sort()
    palette = default_colors(len(pairs))
    return [ClassInfo(code, labels.styles[key][0] or key, labels.styles[key][1] or palette[i])
            for i, (code, key) in enumerate(pairs)]


def label_samples(labels: LabelGeometries, inputs: Inputs) -> LabelSamples:
    """Training pixels on the HSI grid; pixels where the HSI (or SAR) is nodata are skipped and counted."""
    info = inputs.hsi_info
    reader = inputs.reader

    # pixels with NaN in a usable HSI band or in any SAR band cannot train; read in row blocks
    valid = reader_valid_fn(SimpleNamespace(info=SimpleNamespace(bad_bands=list(info.bad_bands)),
                                            band_count=reader.band_count, height=reader.height,
                                            read=reader.read))

    require_georeferencing(info, "HSI", f"the label layer '{labels.layer_name}'")
    try:
        return _label_samples(labels, inputs, valid)
    except LabelError as exc:
        if inputs.sar_coverage is not None and inputs.sar_coverage < 0.995:
            raise LabelError(f"{exc}. Note: the SAR raster covers only {100 * inputs.sar_coverage:.0f} % of the "
                             "HSI scene and labels where it has no data are skipped: give a SAR covering the "
                             "whole scene, or leave SAR empty") from None
        raise


def _label_samples(labels: LabelGeometries, inputs: Inputs, valid) -> LabelSamples:
    info = inputs.hsi_info
    infos = _class_infos(labels)
    inside = reader_valid_fn(inputs.mask) if inputs.mask is not None else None
    name = f"the label layer '{labels.layer_name}'"
    has_points = len(labels.point_values) > 0
    has_polys = len(labels.polygon_values) > 0
    if has_polys and not has_points:
        return collect_polygon_labels(labels.polygons_wkb, labels.polygon_values, info, valid, infos,
                                      labels.field_name, name, mask=inside)
    samples = collect_point_labels(labels.xs, labels.ys, labels.point_values, info, valid, infos,
                                   labels.field_name, name, mask=inside)
    if has_polys:  # mixed layer: polygons' pixels join the points
        polys = collect_polygon_labels(labels.polygons_wkb, labels.polygon_values, info, valid, infos,
                                       labels.field_name, name, mask=inside)
        if [c.value for c in polys.classes] != [c.value for c in samples.classes]:
            raise ValueError(f"{name} mixes points and polygons with different class sets: use one geometry type")
        samples = LabelSamples(np.concatenate([samples.rows, polys.rows]), np.concatenate([samples.cols, polys.cols]),
                               np.concatenate([samples.class_index, polys.class_index]), samples.classes,
                               {**samples.report, "polygon_pixels": int(polys.rows.size)})
    return samples


def _label_report_text(report: Dict) -> str:
    parts = [f"{report.get('used', 0)} of {report.get('total', 0)} labels used"]
    for key, text in (("outside_raster", "outside the raster"), ("outside_mask", "outside the mask"),
                      ("on_nodata", "on nodata pixels"),
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
    adapted: Optional[str] = None  # backbone file written by adapt_backbone (skips Stage A)
    mask: Optional[MaskSpec] = None  # train only inside it (labels outside are skipped and counted)
    save: bool = True  # False with no model_path: no file at all (the one-step algorithm classifies from memory)


@dataclass
class TrainOutcome:
    bundle: Optional[str]  # None when the request asked for no file
    metadata: Dict  # what the model file holds (JSON side)
    label_report: Dict
    validation_oa: Optional[float]
    model: Optional[object] = None  # the fitted landcover.FittedModel, to classify without reloading the file


def train(request: TrainRequest, progress: Optional[Progress] = None) -> TrainOutcome:
    from .bundle import input_description, save_bundle
    from ..tasks.landcover import TrainingPixels, bundle_payload, fit

    progress = progress or Progress()
    inputs = open_inputs(request.hsi, request.sar, progress, scan_bands=True, mask=request.mask)
    progress.check()
    samples = label_samples(request.labels, inputs)
    progress.log(_label_report_text(samples.report))
    pixels = TrainingPixels(samples.rows, samples.cols, samples.class_index, samples.n_classes)
    backbone = load_adapted_backbone(request.adapted, request.settings.device, request.settings.backbone.checkpoint,
                                     inputs.reader.sar is not None) if request.adapted else None
    model = fit(inputs.reader, inputs.hsi_info.meta(), inputs.sar_info.meta() if inputs.sar_info else None,
                pixels, request.settings, progress.sub(0.0, 0.97), backbone=backbone)
    metadata, tensors = bundle_payload(model)
    metadata.update({
        "classes": [c.to_dict() for c in samples.classes],
        "inputs": {"hsi": input_description(inputs.hsi_info, "hsi"),
                   "sar": input_description(inputs.sar_info, "sar") if inputs.sar_info else None},
        "crs_wkt": inputs.hsi_info.crs_wkt, "pixel_size": list(inputs.hsi_info.pixel_size),
        "seed": request.settings.seed, "labels": samples.report,
    })
    metadata["versions"]["gdal"] = _gdal_version()
    bundle = None
    if request.model_path or request.save:
        bundle = request.model_path or os.path.join(tempfile.mkdtemp(prefix="difflc-"), "model.difflc")
        save_bundle(bundle, metadata, tensors)
    val = (model.report or {}).get("validation") or {}
    if val:
        progress.log(f"Validation on {_validation_kind(metadata)}: OA {100 * val.get('overall_accuracy', 0):.2f} %, "
                     f"kappa {val.get('kappa', 0):.3f}, mIoU {100 * val.get('mean_iou', 0):.2f} % "
                     f"({val.get('n_samples', 0)} pixels)")
    if request.report_path:
        _write_training_report(request.report_path, val, metadata, scene=(inputs.reader, samples, model))
    progress.report(1.0)
    return TrainOutcome(bundle, metadata, samples.report, val.get("overall_accuracy"), model)


def _write_training_report(path: str, validation: Dict, metadata: Dict, scene=None) -> None:
    """``scene`` (reader, samples, fitted model): the HTML report's quick-look of the training pixels over it."""
    from .report import training_figures_html, training_quicklook, write_accuracy_report

    names = [c.get("name") for c in metadata.get("classes") or []]
    if validation and len(names) == len(validation.get("per_class") or []):  # names, not "class 0"
        validation = {**validation, "per_class": [{**p, "name": names[i]}
                                                  for i, p in enumerate(validation["per_class"])]}
    training = metadata.get("training") or {}
    extra = {"labels": metadata.get("labels"), "backbone": metadata.get("backbone", {}).get("kind"),
             "training": {k: v for k, v in training.items() if k not in ("validation", "input_value")},
             "note": f"validation is {_validation_kind(metadata)}, not an independent reference"}
    worth = training.get("input_value")
    if worth:
        from ..heads.importance import InputValue, describe

        fields = {k: v for k, v in worth.items() if k in InputValue.__dataclass_fields__}
        extra["what_each_input_is_worth"] = describe(InputValue(**fields), worth.get("out_of_bag_oa"))
        extra["input_value"] = worth
    html = path if path.lower().endswith((".html", ".htm")) else None
    figures = ""
    if html:
        look = ""
        if scene is not None:
            reader, samples, model = scene
            look = training_quicklook(reader, model.representations.rgb_bands, samples.rows, samples.cols,
                                      samples.class_index, [c.color for c in samples.classes])
        figures = training_figures_html(metadata, look)
    write_accuracy_report(validation or {}, html_path=html, json_path=None if html else path,
                          title=f"Training report (validation on {_validation_kind(metadata)})", extra=extra,
                          figures=figures)


def _validation_kind(metadata: Dict) -> str:
    if (metadata.get("head") or {}).get("kind") == "forest":
        return "out-of-bag training labels (each pixel scored by the trees that did not see it)"
    return "held-out training labels (a stratified split)"


def _gdal_version() -> str:
    from ..data.raster_io import gdal_version

    return gdal_version()


# ---------------------------------------------------------------------------------------------------------
# classification

@dataclass
class ClassifyOutcome:
    output: str
    confidence: Optional[str]
    class_pixels: Dict[str, int]
    probabilities: Optional[str] = None


def classify(bundle_path: Optional[str], hsi: str, sar: Optional[str], output: str, confidence: Optional[str] = None,
             progress: Optional[Progress] = None, device: str = "auto",
             checkpoint: Optional[str] = None, cleanup: Optional[CleanupSettings] = None,
             probabilities: Optional[str] = None, mask: Optional[MaskSpec] = None,
             rows: Optional[Tuple[int, int]] = None, trained: Optional[TrainOutcome] = None) -> ClassifyOutcome:
    """Classify a scene into ``output``; with ``cleanup`` the complete map is cleaned before it moves into place
    (the confidence and ``probabilities`` rasters stay the classifier's: the smoothed class probabilities whose
    argmax is the map before clean-up). Outside ``mask`` every output is nodata.

    ``rows=(r0, r1)``: only those scene rows, into rasters covering just them (georeferenced in place), with the
    values of the whole-scene run: row blocks of one large scene for engine.jobs.batch. Not with ``cleanup`` (a
    majority filter or sieve across block edges needs the whole map).

    ``trained``: a model :func:`train` just fitted, used as it is in memory (no file written, read or hashed);
    then ``bundle_path`` is ignored."""
    from .bundle import BundleError, check_inputs, load_bundle, validate_model
    from ..tasks.landcover import from_bundle, predict_scene
    from ..data.raster_io import ClassifiedWriter

    progress = progress or Progress()
    in_memory = trained is not None and trained.model is not None
    if in_memory:
        metadata = trained.metadata
    else:
        metadata, tensors = load_bundle(bundle_path)
        validate_model(metadata, bundle_path)
    inputs = open_inputs(hsi, sar, progress, mask=mask)
    check_inputs(metadata, inputs.hsi_info, inputs.sar_info)
    try:
        model = trained.model if in_memory else from_bundle(metadata, tensors, device=device, checkpoint=checkpoint)
        classes = [ClassInfo.from_dict(c) for c in metadata["classes"]]
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # hand-edited metadata.json or weights
        raise BundleError(f"the model file {bundle_path} was edited or is incomplete ({type(exc).__name__}: "
                          f"{exc}): restore the original file or retrain") from None
    values = np.array([c.value for c in classes], dtype=np.int64)
    counts = np.zeros(len(classes), dtype=np.int64)
    progress.log(f"Classifying {inputs.hsi_info.width}x{inputs.hsi_info.height} pixels into {len(classes)} classes "
                 f"in {model.settings.tiles.patch}-pixel tiles (stride {model.settings.tiles.stride})"
                 + (f", rows {rows[0]}-{rows[1] - 1} only" if rows else ""))
    cleaning = cleanup is not None and cleanup.active
    if cleaning and rows is not None:
        raise UserInputError("the map clean-up needs the whole map: classify row blocks without it, then run "
                             "Clean map on the assembled map")
    grid = inputs.hsi_info if rows is None else row_grid(inputs.hsi_info, rows)
    first_row = 0 if rows is None else int(rows[0])
    cleaned: Dict = {}
    finish = _cleanup_hook(cleanup, inputs.hsi_info, progress.sub(0.9, 1.0), cleaned) if cleaning else None
    with ClassifiedWriter(output, grid, classes, confidence, finish=finish, log=progress.log,
                          probabilities_path=probabilities) as writer:
        def write(row: int, index: np.ndarray, conf: np.ndarray, probs: Optional[np.ndarray] = None) -> None:
            out = np.where(index >= 0, values[np.clip(index, 0, None)], -1)
            counts[:] += np.bincount(index[index >= 0], minlength=len(classes))
            writer.write(row - first_row, 0, out, conf if confidence else None, probs)

        predict_scene(model, inputs.reader, write, progress.sub(0.0, 0.9) if cleaning else progress,
                      probabilities=bool(probabilities), rows=rows, class_names=[c.name for c in classes])
    if cleaning:
        counts[:] = [cleaned["class_pixels"].get(int(v), 0) for v in values]
    return ClassifyOutcome(output, confidence, {c.name: int(n) for c, n in zip(classes, counts)}, probabilities)


def row_grid(info: RasterInfo, rows: Tuple[int, int]) -> RasterInfo:
    """The grid of scene rows [r0, r1): same columns, CRS and pixel size, origin moved down by r0 rows."""
    import dataclasses

    r0, r1 = int(rows[0]), int(rows[1])
    gt = tuple(info.geotransform)
    moved = (gt[0] + r0 * gt[2], gt[1], gt[2], gt[3] + r0 * gt[5], gt[4], gt[5])
    return dataclasses.replace(info, height=r1 - r0, geotransform=moved)


# ---------------------------------------------------------------------------------------------------------
# map clean-up (difflc:cleanmap and the optional step of classify)

def _cleanup_hook(settings: CleanupSettings, info: RasterInfo, progress: Progress, summary: Dict):
    """The clean-up as a ClassifiedWriter ``finish`` step: edits the complete temporary map in place."""
    def finish(tmp: str) -> None:
        from ..tasks.cleanup import clean_band
        from ..data.raster_io import ClassBandEditor, pixel_area

        pixel_m2 = None
        if settings.sieve_area_ha > 0:
            areas = pixel_area(info)
            if areas.row_area is not None:
                pixel_m2 = float(np.mean(areas.row_area))
                if np.ptp(areas.row_area) > 1e-6 * pixel_m2:
                    progress.log(f"Minimum mapping unit area converted with the mean pixel area, {pixel_m2:.6g} m² "
                                 f"({areas.note})")
        band = ClassBandEditor(tmp)
        try:
            summary.update(clean_band(band, settings, pixel_m2, progress))
            summary["class_pixels"] = band.counts()
        finally:
            band.close()
        progress.log(f"Clean-up: majority filter changed {summary['majority_changed']} pixels; minimum mapping unit "
                     f"{summary['sieve_pixels']} pixels ({summary['connectivity']}-connected)")
    return finish


@dataclass
class CleanOutcome:
    output: str
    summary: Dict
    class_pixels: Dict[str, int]


def clean_map(source: str, output: str, settings: CleanupSettings, progress: Optional[Progress] = None) -> CleanOutcome:
    """Copy a classified raster through the classified writer (style carried over: names, colours, category names,
    ``.qml``; nodata kept where it was) and clean it before it is moved into place."""
    from ..data.raster_io import ClassifiedWriter, class_styles

    progress = progress or Progress()
    if not settings.active:
        raise ValueError("nothing to do: set a minimum mapping unit (sieve) and/or a majority filter radius")
    reader = RasterReader(source, name="INPUT")
    info = reader.info
    _require_class_map(info, "INPUT")
    if os.path.abspath(source) == os.path.abspath(output):
        raise ValueError("the cleaned map must be written to another file than its input")
    styles = {v: (name, color) for v, name, color in class_styles(source)}
    present: set = set()
    # the values actually mapped, in case some have no style (read as float32, kept as int64: 8 bytes a pixel)
    for row, rows in row_blocks(info.height, info.width, itemsize=8):
        data = reader.read(row, 0, rows, info.width)[0]
        present.update(np.unique(data[~np.isnan(data)]).astype(np.int64).tolist())
        progress.sub(0.0, 0.1).step((row + rows) / info.height)
    if any(v < 0 for v in present):
        raise ValueError(f"{os.path.basename(source)} holds negative values: class values must be 0 or positive")
    values = sorted(present | set(styles))
    palette = default_colors(len(values))
    classes = [ClassInfo(v, styles.get(v, (f"class {v}", None))[0], styles.get(v, (None, None))[1] or palette[i])
               for i, v in enumerate(values)]
    summary: Dict = {}
    finish = _cleanup_hook(settings, info, progress.sub(0.3, 1.0), summary)
    with ClassifiedWriter(output, info, classes, finish=finish, log=progress.log) as writer:
        for row, rows in row_blocks(info.height, info.width, itemsize=8):
            data = reader.read(row, 0, rows, info.width)[0]
            writer.write(row, 0, np.where(np.isnan(data), -1, data).astype(np.int64))
            progress.sub(0.1, 0.3).step((row + rows) / info.height)
    names = {c.value: c.name for c in classes}
    return CleanOutcome(output, summary, {names[v]: int(n) for v, n in sorted(summary["class_pixels"].items())})


# ---------------------------------------------------------------------------------------------------------
# Stage A on its own, and the representations for inspection

ADAPTED_FORMAT = "difflc-backbone"


def adapt_backbone(hsi: str, sar: Optional[str], settings: PipelineSettings, output: str,
                   progress: Optional[Progress] = None) -> Dict:
    """Stage A alone: writes the FiLM delta (or the compact backbone) with its identity, for trainclassifier."""
    from .bundle import save_bundle
    from ..tasks.landcover import fit_scene_representations, prepare_backbone

    progress = progress or Progress()
    inputs = open_inputs(hsi, sar, progress.sub(0.0, 0.02), scan_bands=True)
    reps = fit_scene_representations(inputs.reader, inputs.hsi_info.meta(),
                                     inputs.sar_info.meta() if inputs.sar_info else None, settings,
                                     progress.sub(0.02, 0.07))
    prepared = prepare_backbone(inputs.reader, reps, settings, progress.sub(0.07, 0.99))
    metadata = {"format": ADAPTED_FORMAT, "backbone": prepared.info.to_dict(), "settings": settings.to_dict(),
                "source": {"hsi": os.path.abspath(hsi), "sar": os.path.abspath(sar) if sar else None}}
    save_bundle(output, metadata, prepared.tensors)
    progress.report(1.0)
    return prepared.info


def load_adapted_backbone(path: str, device: str, checkpoint: Optional[str], has_sar: bool):
    from .bundle import load_bundle
    from ..networks.device import resolve_device
    from ..tasks.landcover import BackboneInfo, PreparedBackbone, restore_backbone

    metadata, tensors = load_bundle(path, formats=(ADAPTED_FORMAT,))  # another kind: bundle.wrong_kind says which
    info = BackboneInfo.from_dict(metadata["backbone"])
    if "sar" in info.modalities and not has_sar:
        raise ValueError(f"the adapted backbone {os.path.basename(path)} was adapted with SAR: give a SAR layer, "
                         "or adapt again without one")
    model = restore_backbone(info, tensors, resolve_device(device), checkpoint)
    return PreparedBackbone(model, info, tensors)


def build_representations(hsi: str, sar: Optional[str], settings: PipelineSettings, outputs: Dict[str, str],
                          progress: Optional[Progress] = None) -> Dict[str, str]:
    """Write the pRGB / PCA / SAR images (3-band Float32 in [-1, 1]) for inspection, streamed by row blocks."""
    from ..tasks.landcover import fit_scene_representations
    from ..data.raster_io import ImageWriter

    progress = progress or Progress()
    inputs = open_inputs(hsi, sar, progress.sub(0.0, 0.05), scan_bands=True)
    reps = fit_scene_representations(inputs.reader, inputs.hsi_info.meta(),
                                     inputs.sar_info.meta() if inputs.sar_info else None, settings,
                                     progress.sub(0.05, 0.2))
    wanted = {m: p for m, p in outputs.items() if p and (m != "sar" or inputs.sar_info is not None)}
    info = inputs.hsi_info
    writers = {m: ImageWriter(path, info, _channel_names(m)) for m, path in wanted.items()}
    try:
        for row, rows in row_blocks(info.height, info.width, inputs.reader.band_count):
            hsi_block, sar_block = inputs.reader.split(inputs.reader.read(row, 0, rows, info.width))
            images = reps.apply(hsi_block, sar_block)
            for m, writer in writers.items():
                writer.write(row, images[m])
            progress.sub(0.2, 1.0).step((row + rows) / info.height)
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    for writer in writers.values():
        writer.commit()
    return wanted


def _channel_names(modality: str) -> List[str]:
    return {"prgb": ["red", "green", "blue"], "pca": ["PC1", "PC2", "PC3"],
            "sar": ["Pauli R", "Pauli G", "Pauli B"]}.get(modality, ["1", "2", "3"])


# ---------------------------------------------------------------------------------------------------------
# accuracy assessment

def assess(classified: str, reference_raster: Optional[str] = None,
           reference_labels: Optional[LabelGeometries] = None, exclude: Optional[LabelGeometries] = None,
           ignore_values: Sequence[int] = (), html: Optional[str] = None, json_path: Optional[str] = None,
           progress: Optional[Progress] = None, area_estimation: bool = True) -> Dict:
    """Confusion matrix and metrics of a classified raster against a reference raster or labelled features.

    Classes are matched by value (a value named differently in the map and the reference is refused). Pixels
    under ``exclude`` (e.g. the training points) and reference values in ``ignore_values`` are left out, so the
    map is judged on independent pixels only. With ``area_estimation`` the map's class areas, counted block by
    block, weight the sample into Olofsson et al. 2014 area-adjusted accuracies and area estimates
    (``metrics["area_estimation"]``, see :mod:`engine.assessment.area`).
    """
    from ..assessment.area import MapAreaCounter, check_class_names
    from ..assessment.metrics import metrics_from_confusion
    from ..data.raster_io import pixel_area
    from .report import write_accuracy_report

    progress = progress or Progress()
    if (reference_raster is None) == (reference_labels is None):
        raise ValueError("give exactly one reference: a reference raster or a reference label layer")
    cls = RasterReader(classified, name="classified")
    info = cls.info
    _require_class_map(info, "CLASSIFIED")
    if reference_labels is not None or exclude is not None:
        require_georeferencing(info, "classified", "the reference/exclude features")
    names = category_names(classified)
    if reference_raster is not None:
        check_class_names(names, category_names(reference_raster))
    else:
        check_class_names(names, _style_names(reference_labels))
    areas = pixel_area(info) if area_estimation else None
    counter = MapAreaCounter(areas.row_area) if area_estimation else None
    excluded = np.zeros(0, dtype=np.int64)
    if exclude is not None:
        rows, cols = _feature_pixels(exclude, info)
        excluded = np.unique(rows * info.width + cols)
    pairs: Dict[Tuple[int, int], int] = {}

    def add(ref: np.ndarray, pred: np.ndarray, flat_index: np.ndarray) -> None:
        ok = ~np.isnan(ref) & ~np.isnan(pred)
        if ignore_values:
            ok &= ~np.isin(ref, list(ignore_values))
        if excluded.size:
            ok &= ~np.isin(flat_index, excluded)
        if not ok.any():
            return
        codes = np.stack([ref[ok].astype(np.int64), pred[ok].astype(np.int64)], axis=1)
        uniq, counts = np.unique(codes, axis=0, return_counts=True)
        for (a, b), n in zip(uniq.tolist(), counts.tolist()):
            pairs[(a, b)] = pairs.get((a, b), 0) + n

    if reference_raster is not None:
        ref_reader = RasterReader(reference_raster, ref=info, log=progress.log, name="reference", ref_name="classified",
                                  resample="nearest")
        for row, rows in row_blocks(info.height, info.width, 2, itemsize=8):  # reference + map, then int64 codes
            ref = ref_reader.read(row, 0, rows, info.width)[0]
            pred = cls.read(row, 0, rows, info.width)[0]
            if counter is not None:
                counter.add(row, pred)
            flat = (np.arange(row, row + rows)[:, None] * info.width + np.arange(info.width)[None, :])
            add(ref.ravel(), pred.ravel(), flat.ravel())
            progress.step((row + rows) / info.height)
    else:
        rows, cols, values = _feature_pixels(reference_labels, info, with_values=True)
        inside = (rows >= 0) & (rows < info.height) & (cols >= 0) & (cols < info.width)
        rows, cols, values = rows[inside], cols[inside], values[inside]
        pred = np.array([cls.read(int(r), int(c), 1, 1)[0, 0, 0] for r, c in zip(rows, cols)], dtype=np.float64)
        add(values.astype(np.float64), pred, rows * info.width + cols)
        if counter is not None:
            _count_map(cls, counter, progress)
    if not pairs:
        raise ValueError("no pixel has both a reference class and a classified value: check that the reference "
                         "covers the map, its CRS, and the ignored values")
    values = sorted({a for a, _ in pairs} | {b for _, b in pairs} | set(names))
    index = {v: i for i, v in enumerate(values)}
    cm = np.zeros((len(values), len(values)), dtype=np.int64)
    for (a, b), n in pairs.items():
        cm[index[a], index[b]] += n
    labels = [names.get(v, f"class {v}") for v in values]
    metrics = metrics_from_confusion(cm, labels)
    metrics["class_values"] = values
    extra = {"classified": os.path.abspath(classified),
             "reference": os.path.abspath(reference_raster) if reference_raster else reference_labels.layer_name,
             "excluded_pixels": int(excluded.size)}
    if counter is not None:
        metrics["area_estimation"] = _area_estimation(cm, values, labels, counter, areas)
    write_accuracy_report(metrics, html_path=html, json_path=json_path, title="Accuracy assessment", extra=extra)
    return metrics


def _count_map(cls: RasterReader, counter, progress: Progress) -> None:
    """The map's class areas, streamed by row blocks (the reference pass never reads the whole map)."""
    height, width = cls.info.height, cls.info.width
    for row, rows in row_blocks(height, width):
        counter.add(row, cls.read(row, 0, rows, width)[0])
        progress.step((row + rows) / height)


def _area_estimation(cm: np.ndarray, values: List[int], labels: List[str], counter, areas) -> Dict:
    """Olofsson et al. 2014 estimates from the confusion matrix (rows = reference) and the streamed map areas."""
    from ..assessment.area import stratified_estimates

    scale, unit = _area_unit(areas)
    map_area = np.array([counter.area.get(v, 0.0) * scale for v in values])
    estimates = stratified_estimates(cm.T, map_area, values, labels, unit=unit)
    out = estimates.to_dict()
    out["area_note"] = areas.note + (": areas in hectares (1 ha = 10,000 m², 1 km² = 100 ha)" if unit == "ha" else "")
    out["map_pixels"] = [int(counter.pixels.get(v, 0)) for v in values]
    return out


def _style_names(labels: LabelGeometries) -> Dict[int, str]:
    """{class value: name} from a reference layer's styles (only integer values can match the map's)."""
    names = {}
    for key, (name, _color) in (labels.styles or {}).items():
        try:
            names[int(float(key))] = name
        except (TypeError, ValueError):
            continue
    return names


def _feature_pixels(labels: LabelGeometries, info: RasterInfo, with_values: bool = False):
    """Pixels under the label features (points: their pixel; polygons: every pixel centre inside)."""
    from ..data.labels import map_to_pixel, rasterize_polygons

    rows, cols = map_to_pixel(labels.xs, labels.ys, info.geotransform)
    values = list(labels.point_values)
    if labels.polygons_wkb:
        pr, pc, which = rasterize_polygons(labels.polygons_wkb, labels.polygon_values, info)
        rows, cols = np.concatenate([rows, pr]), np.concatenate([cols, pc])
        values += [labels.polygon_values[i] for i in which]
    if not with_values:
        return rows, cols
    try:
        vals = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the reference field '{labels.field_name}' of '{labels.layer_name}' must hold the class "
                         "values of the map (integers), not text")
    return rows, cols, vals


# ---------------------------------------------------------------------------------------------------------
# change between two classified maps

def _area_unit(areas) -> Tuple[float, str]:
    """(scale, unit) from pixel areas: m² → hectares, else pixels."""
    return (1e-4, "ha") if areas.unit == "m2" else (1.0, "pixels")


def _require_class_map(info: RasterInfo, role: str) -> None:
    """The one classified-map rule (accuracy, change statistics, clean-up): one band of integer class values."""
    if info.band_count != 1 or not info.dtype.startswith(("Byte", "UInt", "Int")):
        raise UserInputError(
            f"{role}: {os.path.basename(info.path)} has {info.band_count} band(s) of {info.dtype}; a classified "
            "map has one band of integer class values (Byte/UInt16, e.g. the OUTPUT of 'Classify'): choose the "
            "classified raster, not an image")


def change_statistics(first: str, second: str, table: Optional[str] = None, html: Optional[str] = None,
                      json_path: Optional[str] = None, progress: Optional[Progress] = None,
                      block_rows: int = 256):
    """From–to matrix of two classified maps (date 1 → date 2) with pixel counts and areas, streamed by row blocks.

    The date-2 map is read on the date-1 grid: on another grid (or CRS) it is resampled there by nearest neighbour
    on the fly (logged); a map that does not overlap is refused. Pixels that are nodata in either map (or outside
    the date-2 map) are left out and counted. Areas use :func:`raster_io.pixel_area` of the date-1 map.
    """
    from ..assessment.change import FromToCounter, legend_conflicts
    from ..data.raster_io import pixel_area, read_info
    from .report import write_change_report

    progress = progress or Progress()
    info1, info2 = read_info(first), read_info(second)
    _require_class_map(info1, "FIRST")
    _require_class_map(info2, "SECOND")
    names1, names2 = category_names(first), category_names(second)
    reader1 = RasterReader(first, name="date-1 map")
    reader2 = RasterReader(second, ref=info1, log=progress.log, name="date-2 map", ref_name="date-1 map",
                           resample="nearest")
    areas = pixel_area(info1)
    scale, unit = _area_unit(areas)
    counter = FromToCounter(areas.row_area)
    for row, rows in row_blocks(info1.height, info1.width, 2, max_rows=block_rows):  # both maps' rows
        counter.add(row, reader1.read(row, 0, rows, info1.width)[0], reader2.read(row, 0, rows, info1.width)[0])
        progress.step((row + rows) / info1.height)
    matrix = counter.matrix(names1, names2, unit=unit, area_scale=scale,
                            area_note=areas.note + ("; areas in hectares (1 ha = 10,000 m²)" if unit == "ha" else ""))
    if matrix.valid_pixels == 0:
        raise UserInputError(
            f"no pixel has a class in both maps ({os.path.basename(first)}, {os.path.basename(second)}): every "
            "overlapping pixel is nodata in one of them; check their nodata values and that they cover the same area")
    if reader2.warped:
        matrix.notes.append("the date-2 map was resampled onto the date-1 grid by nearest neighbour")
    conflicts = legend_conflicts(names1, names2)
    if conflicts:
        text = ("class values named differently in the two legends (classes are matched by value, so 'changed' "
                "counts these as unchanged): " + "; ".join(conflicts))
        matrix.notes.append(text)
        progress.log(text)
    if matrix.excluded_pixels:
        progress.log(f"{matrix.excluded_pixels:,} pixels left out as nodata (date 1 only: {matrix.nodata_first:,}, "
                     f"date 2 only or outside it: {matrix.nodata_second:,}, both: {matrix.nodata_both:,})")
    extra = {"date1_map": os.path.abspath(first), "date2_map": os.path.abspath(second)}
    write_change_report(matrix, table_path=table, html_path=html, json_path=json_path, extra=extra)
    return matrix


# ---------------------------------------------------------------------------------------------------------
# change detection between two dates (difflc:detectchanges; the method is engine.tasks.changedetect)

CHANGE_WORDS = {"change", "changed", "yes", "true", "1"}
NO_CHANGE_WORDS = {"no change", "no-change", "no_change", "nochange", "unchanged", "no", "false", "stable", "0"}


@dataclass
class ChangeRequest:
    """Everything difflc:detectchanges hands the engine: files in, files out, settings."""

    before: str
    after: str
    output: str
    settings: object  # changedetect.ChangeSettings
    score: Optional[str] = None
    model_path: Optional[str] = None
    report_path: Optional[str] = None  # .html or .json
    labels: Optional[LabelGeometries] = None  # field: change 1 / no change 0 (integers or text)
    mask: Optional[MaskSpec] = None
    # a saved supervised change model: score the pair with it instead of fitting (its settings replace
    # ``settings`` except the device)
    apply_model: Optional[str] = None


@dataclass
class ChangeOutcome:
    output: str
    score: Optional[str]
    result: object  # changedetect.ChangeResult
    report: Dict


def _date_scan(reader, name: str, path: str, progress: Progress, block_rows: int = 256) -> int:
    """Valid pixels (no NaN in any band) of one date on the date-1 grid; refuses a date without any."""
    count = 0
    for row, rows in row_blocks(reader.height, reader.width, reader.band_count, max_rows=block_rows):
        count += int((~np.isnan(reader.read(row, 0, rows, reader.width)).any(axis=0)).sum())
        progress.step((row + rows) / reader.height)
    if count == 0:
        raise UserInputError(f"the {name} raster {os.path.basename(path)} has no valid pixel on the BEFORE grid"
                             f"{' inside the mask' if isinstance(reader, MaskedReader) else ''} (all nodata): check "
                             "its nodata value and that it covers the same area as the other date")
    return count


def _change_labels(labels: LabelGeometries, info: RasterInfo, valid_fn, inside):
    """The LABELS field as change (1) / no change (0) at valid pixels of both dates (changedetect.ChangeLabels)."""
    from ..tasks.changedetect import ChangeLabels

    require_georeferencing(info, "BEFORE", f"the label layer '{labels.layer_name}'")
    name = f"the label layer '{labels.layer_name}'"
    mask = reader_valid_fn(inside) if inside is not None else None
    parts = []
    if len(labels.point_values):
        parts.append(collect_point_labels(labels.xs, labels.ys, labels.point_values, info, valid_fn, None,
                                          labels.field_name, name, mask=mask))
    if len(labels.polygon_values):
        parts.append(collect_polygon_labels(labels.polygons_wkb, labels.polygon_values, info, valid_fn, None,
                                            labels.field_name, name, mask=mask))
    rows, cols, change = [], [], []
    report: Dict = {}
    numeric = all(_is_number(v) for v in list(labels.point_values) + list(labels.polygon_values) if v is not None)
    for samples in parts:
        flags = []
        for c in samples.classes:
            text = str(c.value) if numeric else str(c.name).strip().lower()
            if text in CHANGE_WORDS:
                flags.append(1)
            elif text in NO_CHANGE_WORDS:
                flags.append(0)
            else:
                raise UserInputError(
                    f"the field '{labels.field_name}' of {name} holds '{c.name}': use 1 (or 'change') for change and "
                    "0 (or 'no change' / 'unchanged') for no change")
        flags_arr = np.asarray(flags, np.int64)
        rows.append(samples.rows)
        cols.append(samples.cols)
        change.append(flags_arr[samples.class_index])
        report = {**samples.report, **report}
    y = np.concatenate(change) if change else np.zeros(0, np.int64)
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        only = "change" if present == [1] else "no change" if present == [0] else "nothing usable"
        raise UserInputError(f"the field '{labels.field_name}' of {name} holds one class only ({only}) on valid "
                             "pixels of both dates: label both change (1) and no change (0), or leave LABELS empty "
                             "for the unsupervised mode")
    return ChangeLabels(np.concatenate(rows), np.concatenate(cols), y), report


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def detect_changes(request: ChangeRequest, progress: Optional[Progress] = None) -> ChangeOutcome:
    """BEFORE/AFTER rasters (AFTER resampled onto the BEFORE grid when needed) → styled change map, score, model,
    report; every output is written to a temporary beside it and moved into place only when all are complete."""
    import time

    from .bundle import load_bundle, save_bundle
    from ..tasks.changedetect import (CHANGE, MODEL_FORMAT, NO_CHANGE, ChangeResult, ScoreSample, automatic_threshold,
                                      check_pair, fit_supervised, model_from_bundle, prepare, saved_settings,
                                      stream_scores)
    from ..files import write_text
    from ..data.labels import ClassInfo as _ClassInfo
    from ..data.raster_io import ClassifiedWriter, ImageWriter, pixel_area, read_info
    from .charts import RowSampler
    from .report import change_figures_html, render_detection_html

    progress = progress or Progress()
    t0 = time.perf_counter()
    settings = request.settings
    saved = None
    if request.apply_model:
        if request.labels is not None:
            raise UserInputError("LABELS and a change model to apply were both given: a saved model is applied as "
                                 "it is; leave LABELS empty, or train a new model with Detect changes")
        saved = load_bundle(request.apply_model, formats=(MODEL_FORMAT,))
        settings = saved_settings(saved[0], settings.pipeline.device)
    before = RasterReader(request.before, log=progress.log, name="BEFORE", complex_amplitude=True)
    after_info = read_info(request.after)
    if after_info.band_count != before.band_count:
        raise UserInputError(f"the BEFORE raster {os.path.basename(request.before)} has {before.band_count} band(s) "
                             f"and the AFTER raster {os.path.basename(request.after)} {after_info.band_count}: change "
                             "detection compares the same bands at both dates; give two rasters of the same sensor "
                             "and band set")
    after = RasterReader(request.after, ref=before.info, log=progress.log, name="AFTER", ref_name="BEFORE",
                         complex_amplitude=True)
    r1, r2 = before, after
    inside = None
    if request.mask is not None:
        require_georeferencing(before.info, "BEFORE", f"the mask '{request.mask.name}'")
        inside = mask_reader(before.info, request.mask.raster, request.mask.polygons_wkb, log=progress.log)
        if _mask_share(inside, progress) == 0.0:
            raise UserInputError(f"the mask '{request.mask.name}' covers no pixel of the BEFORE raster "
                                 f"{os.path.basename(request.before)}: check its CRS and extent, or leave MASK empty")
        r1, r2 = MaskedReader(before, inside), MaskedReader(after, inside)
    check_pair(r1, r2)
    if saved is not None:
        trained_bands = int(((saved[0].get("inputs") or {}).get("before") or {}).get("band_count", -1))
        if trained_bands != before.band_count:
            raise UserInputError(f"the change model {os.path.basename(request.apply_model)} was trained on "
                                 f"{trained_bands} band(s) and BEFORE {os.path.basename(request.before)} has "
                                 f"{before.band_count}: apply it to rasters of the sensor and band set it was "
                                 "trained on")
    n1 = _date_scan(r1, "BEFORE", request.before, progress.sub(0.0, 0.02))
    n2 = _date_scan(r2, "AFTER", request.after, progress.sub(0.02, 0.04))
    progress.log(f"Valid pixels: BEFORE {n1:,}, AFTER {n2:,} of {before.width * before.height:,}")
    labels, label_report = None, {}
    if request.labels is not None:
        from ..tasks.changedetect import PairReader

        pair = PairReader(r1, r2)
        valid = reader_valid_fn(SimpleNamespace(info=SimpleNamespace(bad_bands=[]), band_count=pair.band_count,
                                                height=pair.height, read=pair.read))
        labels, label_report = _change_labels(request.labels, before.info, valid, inside)
        progress.log(_label_report_text(label_report))
    progress.check()

    if saved is not None:
        model = model_from_bundle(saved[0], saved[1], settings)
        progress.log(f"Change model {request.apply_model}: {model.head.n_trees} trees on {model.head.n_features} "
                     "inputs, applied as saved (its representations, network and channel statistics)")
    else:
        model = prepare(r1, r2, settings, progress.sub(0.05, 0.25))
        if labels is not None:
            fit_supervised(model, r1, r2, labels, progress.sub(0.25, 0.4))
    supervised = model.supervised
    score_path = request.score or os.path.join(tempfile.mkdtemp(prefix="difflc-"), "score.tif")
    score_name = "change probability (forest)" if supervised else "change score (deep CVA distance)"
    scores = ImageWriter(score_path, before.info, [score_name])
    sample = ScoreSample(settings.threshold_sample, settings.pipeline.seed)
    committed = False
    try:
        def write(row: int, s: np.ndarray) -> None:
            scores.write(row, s[None])
            sample.add(s)  # the threshold (unsupervised) and the report's histogram

        stream_scores(model, r1, r2, write, progress.sub(0.4, 0.9))
        if supervised:
            threshold, method = 0.5, "forest P(change) ≥ 0.5"
        else:
            threshold = automatic_threshold(sample.values, settings.threshold)
            method = f"{settings.threshold} threshold on the deep CVA score"
            model.threshold = threshold
        progress.log(f"Threshold: {threshold:.6g} ({method})")
        classes = [_ClassInfo(NO_CHANGE, "no change", "#d9d9d9"), _ClassInfo(CHANGE, "change", "#e31a1c")]
        counts = np.zeros(3, np.int64)  # no change, change, nodata
        areas = pixel_area(before.info)
        changed_area = 0.0
        map_look = RowSampler(before.height, before.width)  # the report's quick-look of the map
        with ClassifiedWriter(request.output, before.info, classes, log=progress.log) as writer:
            for row, rows in row_blocks(before.height, before.width, itemsize=8):  # scores, then int64 classes
                s = scores.read(row, rows)[0]
                ok = np.isfinite(s)
                out = np.where(ok, (np.nan_to_num(s, nan=-np.inf) >= threshold).astype(np.int64), -1)
                writer.write(row, 0, out)
                map_look.add(row, out)
                counts += [int((out == 0).sum()), int((out == 1).sum()), int((out < 0).sum())]
                if areas.row_area is not None:
                    changed_area += float(((out == 1).sum(axis=1) * areas.row_area[row:row + rows]).sum())
                progress.sub(0.9, 0.97).step((row + rows) / before.height)
        if request.score:
            scores.commit()
            committed = True
    finally:
        if not committed:
            scores.discard()
            if not request.score:
                with _suppress():
                    os.rmdir(os.path.dirname(score_path))
    result = ChangeResult("supervised" if supervised else "unsupervised", method, float(threshold), int(counts[1]),
                          int(counts[0]), int(counts[2]), round(time.perf_counter() - t0, 2), dict(model.report))
    valid_px = int(counts[0] + counts[1])
    report = {
        "mode": result.mode, "method": method, "features": settings.features,
        "score": score_name, "threshold": result.threshold,
        "changed_pixels": result.changed_pixels, "unchanged_pixels": result.unchanged_pixels,
        "nodata_pixels": result.nodata_pixels,
        "changed_fraction": result.changed_pixels / valid_px if valid_px else None,
        "changed_area_ha": changed_area * 1e-4 if areas.row_area is not None else None,
        "area_note": areas.note, "backbone": model.backbone_info.kind if model.backbone_info else "none",
        "before": os.path.abspath(request.before), "after": os.path.abspath(request.after),
        "after_resampled": bool(after.warped), "seconds": result.seconds,
        "citations": "deep CVA: Saha, Bovolo & Bruzzone 2019, IEEE TGRS 57(6); thresholds: Otsu 1979, IEEE SMC "
                     "9(1); Kittler & Illingworth 1986, Pattern Recognition 19(1)",
    }
    if saved is not None:
        report["applied_model"] = os.path.abspath(request.apply_model)
    if supervised:
        report["validation"] = model.report.get("validation") or {}
        report["labels"] = {k: v for k, v in label_report.items() if not isinstance(v, (list, dict))}
    if request.model_path:
        save_bundle(request.model_path, *_change_bundle(model, before.info, label_report))
    if request.report_path:
        if request.report_path.lower().endswith(".json"):
            write_text(request.report_path, json.dumps(report, indent=2, default=str))
        else:
            figures = change_figures_html(r1, r2, model.representations.rgb_bands, map_look.array(),
                                          [c.color for c in classes], sample.values, threshold, score_name)
            write_text(request.report_path, render_detection_html(report, figures))
    progress.log(f"Changed: {result.changed_pixels:,} of {valid_px:,} valid pixels "
                 f"({100 * (report['changed_fraction'] or 0):.2f} %)"
                 + (f", {report['changed_area_ha']:,.2f} ha" if report["changed_area_ha"] is not None else ""))
    progress.report(1.0)
    return ChangeOutcome(request.output, request.score, result, report)


def _suppress():
    import contextlib

    return contextlib.suppress(OSError)


def _change_bundle(model, info: RasterInfo, label_report: Dict) -> Tuple[Dict, Dict]:
    """(metadata, tensors) of a change model: JSON + safetensors, nothing pickled (engine.jobs.bundle)."""
    import torch

    from .bundle import input_description
    from ..tasks.changedetect import MODEL_FORMAT

    tensors = {k: v.detach().cpu() if hasattr(v, "detach") else torch.as_tensor(v)
               for k, v in model.backbone_tensors.items()}
    tensors["stats.mean"] = torch.from_numpy(np.asarray(model.mean, np.float32))
    tensors["stats.std"] = torch.from_numpy(np.asarray(model.std, np.float32))
    if model.head is not None:
        tensors.update({f"head.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.head.arrays().items()})
    metadata = {"format": MODEL_FORMAT, "settings": model.settings.to_dict(),
                "representations": model.representations.to_dict(),
                "backbone": model.backbone_info.to_dict() if model.backbone_info else None,
                "feature_groups": [list(g) for g in model.extractor.groups] if model.extractor is not None else [],
                "n_diffusion": model.n_diffusion, "threshold": model.threshold,
                "head": {"kind": "forest", "n_features": model.head.n_features, "n_classes": 2}
                if model.head is not None else None,
                "inputs": {"before": input_description(info, "hsi")}, "labels": label_report,
                "crs_wkt": info.crs_wkt, "pixel_size": list(info.pixel_size), "training": model.report}
    return metadata, tensors
