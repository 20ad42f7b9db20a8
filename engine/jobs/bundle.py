"""Model bundle: one zip file holding ``metadata.json`` and ``weights.safetensors`` — nothing pickled.

A bundle is everything needed to classify another scene (except an ImageNet base checkpoint, which is
identified by fingerprint). It is written to a temporary file beside the target and moved into place, so a
failed save never leaves a broken model. Loading never executes code: JSON + safetensors only.

Metadata schema (``format`` = "difflc-model", ``format_version`` = 1)::

    format, format_version, created (ISO 8601 UTC)
    versions      {engine, torch, numpy, python, gdal?}
    classes       [{value, name, color}]
    inputs        {hsi: {band_count, wavelengths_nm | null, bad_bands, descriptions},
                   sar: {band_count, descriptions, units} | null}
    representations   RepresentationModel.to_dict()
    settings          PipelineSettings.to_dict()
    backbone          {kind: checkpoint | compact, config, fingerprint, checkpoint?/path?}
    feature_groups    [[modality, timestep, block, channels]], modalities, group_sizes
    head              head config (classifier.TrainedHead.config)
    crs_wkt, pixel_size [x, y], seed, training (report)
Tensors: ``backbone.*`` (compact weights) or ``film.*`` (FiLM delta on the checkpoint), and ``head.*``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
import zlib
from typing import Dict, Tuple

from .. import files
from ..errors import CorruptFileError, UserInputError

FORMAT = "difflc-model"
FORMAT_VERSION = 1
METADATA_NAME = "metadata.json"
WEIGHTS_NAME = "weights.safetensors"
WAVELENGTH_TOLERANCE_NM = 5.0


class BundleError(CorruptFileError):
    """The file is not a readable model bundle."""


class BundleMismatchError(UserInputError):
    """The input rasters do not match what the model was trained on."""


def save_bundle(path: str, metadata: Dict, tensors: Dict) -> None:
    """Write ``metadata`` (JSON-able) and ``tensors`` (name → torch.Tensor) as one bundle file."""
    from safetensors.torch import save as st_save

    meta = dict(metadata)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    text = json.dumps(meta, indent=2, ensure_ascii=False, allow_nan=True, default=_json_default)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    with files.atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(METADATA_NAME, text)
            zf.writestr(WEIGHTS_NAME, blob)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _open(path: str) -> zipfile.ZipFile:
    if os.path.isdir(path):
        raise BundleError(f"{path} is a folder, not a model file: choose the model file (.difflc) inside it")
    if not os.path.isfile(path):
        raise BundleError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path} is not a Diffusion Land Cover model bundle (not a zip container): choose a "
                          "file saved by the 'train' algorithm")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"the model file {path} is damaged ({exc}): copy it again or retrain") from None
    names = set(zf.namelist())
    if METADATA_NAME not in names or WEIGHTS_NAME not in names:
        zf.close()
        raise BundleError(f"{path} is a zip file but not a model bundle (needs {METADATA_NAME} and {WEIGHTS_NAME})")
    return zf


def _member(zf: zipfile.ZipFile, name: str, path: str) -> bytes:
    """One member's bytes; a failed CRC or inflate means the file was damaged after it was written."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(f"the model file {path} is damaged ({name}: {exc}): copy it again from where it was "
                          "saved, or retrain") from None


_REQUIRED = ("classes", "inputs", "representations", "settings", "backbone", "modalities", "group_sizes", "head")


def validate_model(meta: Dict, path: str) -> None:
    """Everything classify reads, present and consistent: an edited metadata.json is caught here, by name."""
    edited = f"the model file {path} was edited or is incomplete"
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{edited}: metadata.json lacks {', '.join(missing)}: use the file as 'Train "
                          "classifier' wrote it, or retrain")
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, dict) and {"value", "name"} <= set(c) for c in classes):
        raise BundleError(f"{edited}: 'classes' must be a list of {{value, name, color}}: retrain or restore it")
    n_head = (meta.get("head") or {}).get("n_classes") if isinstance(meta.get("head"), dict) else None
    if n_head is not None and len(classes) != int(n_head):
        raise BundleError(f"{edited}: metadata.json lists {len(classes)} class(es) but the classifier predicts "
                          f"{n_head}: restore the original file or retrain")


def _kinds() -> Dict[str, Tuple[str, str, str]]:
    """Every file this container holds: what it is, who saved it, and the algorithm that reads it (for a file given
    to another)."""
    from . import ADAPTED_FORMAT
    from ..tasks.changedetect import MODEL_FORMAT
    from ..tasks.objects import OBJECT_FORMAT

    return {FORMAT: ("a land-cover model", "saved by Train classifier / Train and classify",
                     "Classify with a trained model (difflc:classify)"),
            MODEL_FORMAT: ("a change model", "saved by Detect changes", "Apply change model (difflc:applychangemodel)"),
            ADAPTED_FORMAT: ("an adapted backbone", "saved by Adapt backbone",
                             "the ADAPTED input of Train classifier (difflc:trainclassifier)"),
            OBJECT_FORMAT: ("an object model", "saved by Train object classifier / Train and classify objects",
                            "Classify objects (difflc:classifyobjects)")}


def wrong_kind(path: str, found, wanted: Tuple[str, ...]) -> str:
    """The message for a bundle of another kind than the algorithm reads: what it is and where to use it."""
    kinds = _kinds()
    if found in kinds and wanted and wanted[0] in kinds:
        what, saved_by, use = kinds[found]
        expected = kinds[wanted[0]][0]
        return f"{path} is {what} ({saved_by}), not {expected}: use it with {use}, or give {expected} here"
    return f"{path} is not a Diffusion Land Cover model bundle (format {found!r})"


def _read_metadata(zf: zipfile.ZipFile, path: str, formats: Tuple[str, ...] = (FORMAT,)) -> Dict:
    try:
        meta = json.loads(_member(zf, METADATA_NAME, path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"the metadata of {path} is damaged: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") not in formats:
        raise BundleError(wrong_kind(path, meta.get("format"), formats) if isinstance(meta, dict)
                          else f"{path}: metadata is not an object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(f"{path} was saved in bundle format {version!r}; this plugin reads up to "
                          f"{FORMAT_VERSION}: update the plugin")
    return meta


def read_bundle_metadata(path: str, formats: Tuple[str, ...] = (FORMAT,)) -> Dict:
    """The metadata only (no torch needed): for checks and the model-information algorithm."""
    with _open(str(path)) as zf:
        return _read_metadata(zf, str(path), formats)


def load_bundle(path: str, formats: Tuple[str, ...] = (FORMAT,)) -> Tuple[Dict, Dict]:
    """(metadata, tensors) — safetensors only, never pickle. ``formats``: accepted metadata formats (the
    adapted-backbone file of ``jobs.adapt_backbone`` shares this container)."""
    from safetensors.torch import load as st_load

    with _open(str(path)) as zf:
        meta = _read_metadata(zf, str(path), formats)
        blob = _member(zf, WEIGHTS_NAME, path)
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"the weights of {path} are damaged: {exc}") from None
    return meta, tensors


# -------------------------------------------------------------------------------------------------------

def input_description(info, kind: str = "hsi") -> Dict:
    """The ``inputs`` entry for a RasterInfo (or a dict with the same keys)."""
    get = (lambda k, d=None: info.get(k, d)) if isinstance(info, dict) else (lambda k, d=None: getattr(info, k, d))
    out = {"band_count": int(get("band_count")), "descriptions": list(get("descriptions", []) or [])}
    if kind == "hsi":
        out["wavelengths_nm"] = get("wavelengths_nm")
        out["bad_bands"] = list(get("bad_bands", []) or [])
    else:
        out["units"] = list(get("units", []) or [])
    return out


def check_inputs(metadata: Dict, hsi_info, sar_info=None,
                 tolerance_nm: float = WAVELENGTH_TOLERANCE_NM) -> None:
    """Raise :class:`BundleMismatchError` when the rasters differ from the training inputs."""
    inputs = metadata.get("inputs") or {}
    hsi_t = inputs.get("hsi") or {}
    hsi = input_description(hsi_info, "hsi")
    problems = []
    if hsi_t and hsi["band_count"] != hsi_t.get("band_count"):
        problems.append(f"the HSI raster has {hsi['band_count']} bands, the model was trained on "
                        f"{hsi_t.get('band_count')}: use an image from the same sensor/product (same bands)")
    else:
        wt, wn = hsi_t.get("wavelengths_nm"), hsi["wavelengths_nm"]
        if wt and wn:
            diffs = [(i, a, b) for i, (a, b) in enumerate(zip(wt, wn))
                     if a is not None and b is not None and abs(a - b) > tolerance_nm]
            reordered = len(wt) == len(wn) and None not in wt and None not in wn and all(
                abs(a - b) <= tolerance_nm for a, b in zip(sorted(wt), sorted(wn)))
            if diffs and reordered:
                i, a, b = diffs[0]
                problems.append(f"the HSI bands are the training bands in another order (band {i + 1} is "
                                f"{b:.2f} nm here, {a:.2f} nm at training; {len(diffs)} positions differ): "
                                "restore the training band order (e.g. Raster ▸ Conversion ▸ Rearrange Bands)")
            elif diffs:
                i, a, b = max(diffs, key=lambda d: abs(d[1] - d[2]))
                problems.append(f"{len(diffs)} HSI band wavelength(s) differ from the training image by more "
                                f"than {tolerance_nm:g} nm (largest: band {i + 1}, {b:.2f} nm here vs {a:.2f} nm "
                                "at training): use an image from the same sensor or retrain")
        if not problems:
            problems += _name_problems("HSI", hsi_t.get("descriptions"), hsi["descriptions"])
    sar_t = inputs.get("sar")
    if sar_t and sar_info is None:
        problems.append("the model was trained with a SAR raster: give a SAR layer "
                        f"({sar_t.get('band_count')} band(s)) too")
    elif sar_info is not None and not sar_t and inputs:
        problems.append("the model was trained without SAR: leave the SAR layer empty")
    elif sar_info is not None and sar_t:
        sar = input_description(sar_info, "sar")
        if sar["band_count"] != sar_t.get("band_count"):
            problems.append(f"the SAR raster has {sar['band_count']} band(s), the model was trained on "
                            f"{sar_t.get('band_count')}: use the same polarisations in the same order")
        else:
            problems += _name_problems("SAR", sar_t.get("descriptions"), sar["descriptions"])
    if problems:
        raise BundleMismatchError("the input rasters do not match this model: " + "; ".join(problems))


def _name_problems(kind: str, trained, here) -> list:
    """Band names (descriptions) compared in order, when both rasters name every band.

    Same count is not same bands: a reordered stack or another sensor's bands give another map silently.
    """
    norm = lambda names: [" ".join(str(n).split()).lower() for n in (names or [])]  # noqa: E731
    t, h = norm(trained), norm(here)
    if not t or len(t) != len(h) or not all(t) or not all(h) or t == h:
        return []
    diffs = [i for i, (a, b) in enumerate(zip(t, h)) if a != b]
    i = diffs[0]
    first = f"band {i + 1} is '{here[i]}' here, '{trained[i]}' at training"
    if sorted(t) == sorted(h):
        return [f"the {kind} bands are the training bands in another order ({first}; {len(diffs)} positions "
                "differ): restore the training band order (e.g. Raster ▸ Conversion ▸ Rearrange Bands)"]
    return [f"the {kind} band names differ from the training image ({first}; {len(diffs)} of {len(t)} bands "
            "differ): use an image of the same sensor and product, or retrain"]
