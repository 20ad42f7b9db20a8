"""QGIS-side reading of the label layer: features → plain coordinates, values and class styles.

The engine takes numpy arrays in the raster's CRS; everything that needs QGIS objects (the layer's
features, its categorized renderer, the coordinate transform) is done here, once, for every algorithm.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import numpy as np
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsProcessingException,
    QgsProject,
    QgsWkbTypes,
)


def renderer_styles(layer) -> Dict[str, Tuple[str, str]]:
    """Class names and colours from a categorized renderer, keyed by the category value as text."""
    renderer = layer.renderer() if hasattr(layer, "renderer") else None
    if not isinstance(renderer, QgsCategorizedSymbolRenderer):
        return {}
    styles = {}
    for cat in renderer.categories():
        value = cat.value()
        if value is None or value == "":
            continue
        key = _value_key(value)
        color = cat.symbol().color().name() if cat.symbol() is not None else None
        styles[key] = (cat.label() or key, color)
    return styles


def reference_styles(layer, field_name: str) -> Dict[str, Tuple[str, str]]:
    """Names of a reference layer's classes: only a categorized style on the reference field itself counts (a
    'class_name' field or a style on another field, e.g. the map class of a sample, names something else)."""
    renderer = layer.renderer() if hasattr(layer, "renderer") else None
    if not isinstance(renderer, QgsCategorizedSymbolRenderer) or renderer.classAttribute() != field_name:
        return {}
    return renderer_styles(layer)


def _value_key(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def read_label_features(source, field_name: str, dest_crs: QgsCoordinateReferenceSystem, feedback,
                        layer_name: Optional[str] = None, style_layer=None):
    """Every feature's class value and geometry, transformed to ``dest_crs``.

    ``source`` is a QgsProcessingFeatureSource or layer; ``style_layer`` the layer whose renderer holds
    the class names/colours (the source itself carries none).
    """
    name = layer_name or (source.sourceName() if hasattr(source, "sourceName") else "labels")
    fields = source.fields()
    if field_name is None:  # geometry only (e.g. pixels to exclude): every feature gets the value 1
        idx = -1
    elif not field_name:
        raise QgsProcessingException(f"No class field given for the label layer '{name}'.")
    else:
        idx = fields.lookupField(field_name)
    if field_name is not None and idx < 0:
        available = ", ".join(f.name() for f in fields) or "(none)"
        raise QgsProcessingException(
            f"The label layer '{name}' has no field '{field_name}'. Available fields: {available}. "
            "Choose the field that holds the class of each point.")
    if source.featureCount() == 0:
        raise QgsProcessingException(
            f"The label layer '{name}' is empty: draw at least two points per class (e.g. in a layer made "
            "by 'Create label layer') and run again.")
    no_geometry_problem(source, name)
    transform = QgsCoordinateTransform(source.sourceCrs(), dest_crs, QgsProject.instance())
    xs, ys, pvals, polys, polyvals = [], [], [], [], []
    skipped = 0
    # names from a 'class_name' field (the createlabellayer convention) when no style gives them
    name_idx = fields.lookupField("class_name") if field_name not in (None, "class_name") else -1
    color_idx = fields.lookupField("class_color") if field_name is not None else -1
    names_from_field: Dict[str, str] = {}
    colors_from_field: Dict[str, str] = {}
    attrs = [i for i in (idx, name_idx, color_idx) if i >= 0]
    request = QgsFeatureRequest().setSubsetOfAttributes(attrs)
    for feature in source.getFeatures(request):
        if feedback is not None and feedback.isCanceled():
            raise QgsProcessingException("Cancelled while reading the label layer.")
        value = feature.attribute(idx) if idx >= 0 else 1
        geom = feature.geometry()
        if geom is None or geom.isEmpty() or value is None or (hasattr(value, "isNull") and value.isNull()) \
                or str(value).strip() == "":
            skipped += 1
            continue
        if name_idx >= 0 and feature.attribute(name_idx) not in (None, ""):
            names_from_field.setdefault(_value_key(value), str(feature.attribute(name_idx)))
        if color_idx >= 0 and re.fullmatch(r"#[0-9a-fA-F]{6}", str(feature.attribute(color_idx) or "")):
            colors_from_field.setdefault(_value_key(value), str(feature.attribute(color_idx)))
        geom.transform(transform)
        gtype = QgsWkbTypes.geometryType(geom.wkbType())
        if gtype == QgsWkbTypes.PointGeometry:
            points = geom.asMultiPoint() if geom.isMultipart() else [geom.asPoint()]
            for p in points:
                xs.append(p.x())
                ys.append(p.y())
                pvals.append(value)
        elif gtype == QgsWkbTypes.PolygonGeometry:
            polys.append(bytes(geom.asWkb()))
            polyvals.append(value)
        else:
            skipped += 1
    if skipped and feedback is not None:
        feedback.pushInfo(f"{skipped} label feature(s) without geometry or class value were skipped.")
    keys = set(names_from_field) | set(colors_from_field)
    styles = {k: (names_from_field.get(k, k), colors_from_field.get(k)) for k in keys}
    styles.update(renderer_styles(style_layer) if style_layer is not None else {})
    from ..engine.jobs import LabelGeometries

    return LabelGeometries(name, field_name, np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64),
                           pvals, polys, polyvals, styles, skipped)


def no_geometry_problem(source, name: str) -> None:
    """A table without geometry (a CSV of X/Y columns opened as it is): say so, and how to load it as points."""
    if QgsWkbTypes.geometryType(source.wkbType()) not in (QgsWkbTypes.NullGeometry, QgsWkbTypes.UnknownGeometry):
        return
    if any(not f.geometry().isEmpty() for f in source.getFeatures(QgsFeatureRequest().setLimit(1000))):
        return
    raise QgsProcessingException(
        f"The layer '{name}' has {source.featureCount()} features but no geometry (a table, e.g. a CSV with X/Y "
        "columns): load it as points first (QGIS: Layer > Add Layer > Add Delimited Text Layer, with its X and Y "
        "fields and CRS), then give that layer, or save it as a GeoPackage and give the .gpkg.")


def read_labels(alg, parameters, context, feedback, raster_file: str, layer_param: str = "LABELS",
                field_param: str = "CLASS_FIELD"):
    """The LABELS/CLASS_FIELD parameters as engine label geometries in the CRS of ``raster_file``."""
    from qgis.core import QgsRasterLayer

    layer = alg.parameterAsVectorLayer(parameters, layer_param, context)
    if layer is None:
        raise QgsProcessingException(f"{layer_param}: no label layer given.")
    field_name = alg.parameterAsString(parameters, field_param, context)
    crs = QgsRasterLayer(raster_file, "hsi", "gdal").crs()
    return read_label_features(layer, field_name, crs, feedback, layer_name=layer.name(), style_layer=layer)
