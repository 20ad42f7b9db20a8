"""difflc:createlabellayer: a styled, empty GeoPackage point layer for sparse labels."""
from __future__ import annotations

import numpy as np
import pytest


def _open(path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "labels", "ogr")  # default style loads from the GeoPackage
    assert layer.isValid(), path
    return layer


def _categories(layer):
    from qgis.core import QgsCategorizedSymbolRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer), type(renderer)
    assert renderer.classAttribute() == "class_id"
    return [(int(c.value()), c.label(), c.symbol().color().name()) for c in renderer.categories()]


def test_layer_fields_crs_and_stored_style(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsWkbTypes
    from qgis.PyQt.QtCore import QMetaType

    out = tmp_path / "labels.gpkg"
    result = processing.run("difflc:createlabellayer", {
        "CLASSES": "1=Water #1F78B4; 2=Forest\n 7 = Dense urban #e31a1c", "CRS": "EPSG:32633",
        "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    layer = _open(out)
    assert layer.crs().authid() == "EPSG:32633"
    assert QgsWkbTypes.geometryType(layer.wkbType()) == QgsWkbTypes.PointGeometry
    assert layer.featureCount() == 0
    fields = layer.fields()
    assert fields.field("class_id").type() in (QMetaType.Type.Int, QMetaType.Type.LongLong)
    assert fields.field("class_name").type() == QMetaType.Type.QString
    cats = _categories(layer)
    assert cats[0] == (1, "Water", "#1f78b4") and cats[2] == (7, "Dense urban", "#e31a1c")
    assert cats[1][:2] == (2, "Forest")
    assert cats[1][2] not in ("#1f78b4", "#e31a1c", "#000000")  # a palette colour no other class uses
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left behind

    from diffusion_landcover.algorithms.layers import renderer_styles  # what the training algorithms read
    assert renderer_styles(layer)["7"] == ("Dense urban", "#e31a1c")


def test_crs_from_reference_raster_and_gpkg_extension(qgis_app, tmp_path):
    import processing
    from osgeo import gdal, osr

    raster = tmp_path / "ref.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(raster), 4, 4, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((500000, 10, 0, 5800000, 0, -10))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(25832)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).WriteArray(np.zeros((4, 4), np.float32))
    ds = None

    result = processing.run("difflc:createlabellayer", {"CLASSES": "1=Water; 2=Forest", "RASTER": str(raster),
                                                        "OUTPUT": str(tmp_path / "points.shp")})
    assert result["OUTPUT"] == str(tmp_path / "points.gpkg")
    layer = _open(result["OUTPUT"])
    assert layer.crs().authid() == "EPSG:25832"
    assert [c[:2] for c in _categories(layer)] == [(1, "Water"), (2, "Forest")]
    # an explicit CRS wins over the raster's
    again = processing.run("difflc:createlabellayer", {"CLASSES": "1=Water", "RASTER": str(raster),
                                                       "CRS": "EPSG:4326", "OUTPUT": str(tmp_path / "b.gpkg")})
    assert _open(again["OUTPUT"]).crs().authid() == "EPSG:4326"


@pytest.mark.parametrize("classes, message", [
    (" ; \n ", "CLASSES is empty"),
    ("Water; Forest", "Cannot read the class entry 'Water'"),
    ("1=Water; 1=Forest", "Class id 1 is listed twice"),
    ("0=Nodata; 1=Water", "0 is reserved for nodata"),
    ("1=Water #12ab", "not a '#rrggbb' hex colour"),
    ("1=", "has no name"),
    ("1=Water; 2=water", "Class name 'water' is listed twice"),
])
def test_bad_classes_are_clear_errors_and_keep_the_existing_file(qgis_app, tmp_path, classes, message):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "labels.gpkg"
    out.write_bytes(b"previous labels")
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("difflc:createlabellayer", {"CLASSES": classes, "CRS": "EPSG:32633", "OUTPUT": str(out)})
    assert out.read_bytes() == b"previous labels"
    assert list(tmp_path.iterdir()) == [out]


def test_existing_output_is_replaced_on_success(qgis_app, tmp_path):
    import processing

    out = tmp_path / "labels.gpkg"
    processing.run("difflc:createlabellayer", {"CLASSES": "1=Old", "CRS": "EPSG:32633", "OUTPUT": str(out)})
    processing.run("difflc:createlabellayer", {"CLASSES": "1=Water; 2=Forest", "CRS": "EPSG:3035",
                                               "OUTPUT": str(out)})
    layer = _open(out)
    assert layer.crs().authid() == "EPSG:3035"
    assert [c[1] for c in _categories(layer)] == ["Water", "Forest"]


def test_parse_classes_assigns_distinct_palette_colours(qgis_app):
    from diffusion_landcover.algorithms.createlabellayer import PALETTE, parse_classes

    parsed = parse_classes("1=A #1f78b4\n2=B; 3=C")
    assert [p[:2] for p in parsed] == [(1, "A"), (2, "B"), (3, "C")]
    colours = [p[2] for p in parsed]
    assert len(set(colours)) == 3 and all(c in PALETTE for c in colours[1:])
