"""The objects algorithms (issue 21) through ``processing.run``: segmentobjects, trainobjectclassifier +
classifyobjects (chained), trainandclassifyobjects, accuracy on a classified polygon layer, and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers_rasters import EPSG, sample_pixels, styled_layer, synthetic_scene, write_points

pytest.importorskip("skimage")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"COMPACT_STEPS": 2, "ADAPT_STEPS": 2, "STRIDE": 32, "TREES": 60}
STYLES = {1: ("Water", "#1f78b4"), 2: ("Forest", "#33a02c")}


def run(alg, params, feedback=None):
    import processing

    return processing.run(f"difflc:{alg}", params, feedback=feedback)


def refusal(alg, params) -> str:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException) as info:
        processing.run(f"difflc:{alg}", params)
    text = str(info.value)
    return text.split("\n", 1)[1] if text.startswith("Unable to execute algorithm\n") else text


def _parcels(path, scene, field="crop", values=(2, 2, 1, 1, None, None), epsg_out=4326):
    """Rectangles on the scene (forest disk / water), written in EPSG:4326 while the raster is UTM."""
    from osgeo import ogr, osr

    rects = [(40, 55, 45, 60), (20, 30, 50, 58), (80, 92, 2, 20), (2, 15, 2, 20), (45, 50, 5, 10), (35, 45, 45, 55)]
    src = osr.SpatialReference()
    src.ImportFromEPSG(EPSG)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(epsg_out)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(src, dst)
    gt = scene.geotransform
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("parcels", srs=dst, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("truth", ogr.OFTInteger))
    for (r0, r1, c0, c1), v in zip(rects, values):
        f = ogr.Feature(layer.GetLayerDefn())
        if v is not None:
            f.SetField(field, v)
        f.SetField("truth", int(np.bincount(scene.truth[r0:r1, c0:c1].ravel()).argmax()))
        x0, x1, y0, y1 = gt[0] + c0 * gt[1], gt[0] + c1 * gt[1], gt[3] + r0 * gt[5], gt[3] + r1 * gt[5]
        g = ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))")
        g.Transform(transform)
        f.SetGeometry(g)
        layer.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def scene(qgis_app, tmp_path_factory):
    return synthetic_scene(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="module")
def parcels(scene, tmp_path_factory):
    from qgis.core import QgsVectorLayer

    path = _parcels(tmp_path_factory.mktemp("parcels") / "parcels.gpkg", scene)
    layer = styled_layer(path, field="crop", styles=STYLES, name="parcels")
    assert isinstance(layer, QgsVectorLayer)
    return path, layer


def _load(path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "out", "ogr")
    assert layer.isValid(), path
    return layer


def test_segmentobjects_makes_a_geopackage_of_objects_in_the_users_units(scene, tmp_path):
    out = tmp_path / "objects.gpkg"
    result = run("segmentobjects", {"HSI": scene.hsi, "OBJECT_SIZE": 0.5, "SIZE_UNIT": 0,  # 0.5 ha = 50 pixels
                                    "COMPACTNESS": 1.0, "OUTPUT": str(out)})
    layer = _load(out)
    n = layer.featureCount()
    assert result["OBJECTS"] == n and 96 * 96 / 50 / 2 < n < 96 * 96 / 50 * 2
    names = [f.name() for f in layer.fields()]
    assert {"object_id", "pixels", "area_m2", "area_ha"} <= set(names)
    feats = list(layer.getFeatures())
    assert all(f.geometry().isGeosValid() for f in feats)
    assert sum(f["pixels"] for f in feats) == 96 * 96
    assert all(f["area_ha"] == pytest.approx(f.geometry().area() / 1e4) for f in feats)


def test_train_then_classify_objects_with_label_points_chained(scene, parcels, tmp_path):
    path, _ = parcels
    rows, cols = sample_pixels(scene.truth, 6, seed=2, margin=4)
    xs, ys = scene.pixel_centre(rows, cols)
    points = styled_layer(write_points(tmp_path / "points.gpkg", xs, ys, scene.truth[rows, cols]), styles=STYLES)
    objects = tmp_path / "objects.gpkg"
    run("segmentobjects", {"HSI": scene.hsi, "OBJECT_SIZE": 100, "SIZE_UNIT": 2, "OUTPUT": str(objects)})
    model = tmp_path / "objects.difflc"
    trained = run("trainobjectclassifier", {"HSI": scene.hsi, "POLYGONS": str(objects), "LABEL_POINTS": points,
                                            "POINTS_FIELD": "class_id", "MODEL": str(model), **TINY})
    assert trained["MODEL"] == str(model) and trained["VALIDATION_OA"] is not None
    # the model is reused on another polygon layer (the parcels, another CRS)
    out = tmp_path / "parcels_classified.gpkg"
    result = run("classifyobjects", {"MODEL": str(model), "HSI": scene.hsi, "POLYGONS": path, "OUTPUT": str(out)})
    layer = _load(out)
    feats = list(layer.getFeatures())
    assert result["NULL_OBJECTS"] == 0 and len(feats) == 6
    assert [f["class"] for f in feats] == [f["truth"] for f in feats]
    assert [f["class_name"] for f in feats] == [STYLES[f["truth"]][0] for f in feats]
    assert layer.crs().authid() == "EPSG:4326"
    # the style from the GeoPackage (QGIS loads it as the layer's default) names and colours the classes
    from qgis.core import QgsCategorizedSymbolRenderer

    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "class"
    cats = {int(c.value()): (c.label(), c.symbol().color().name()) for c in renderer.categories()}
    assert cats == STYLES
    assert (tmp_path / "parcels_classified.qml").is_file()


def test_trainandclassifyobjects_parcels_with_a_partly_filled_field_then_accuracy_by_object_and_area(
        scene, parcels, tmp_path):
    path, layer = parcels
    out = tmp_path / "classified.gpkg"
    result = run("trainandclassifyobjects", {"HSI": scene.hsi, "SAR": scene.sar, "POLYGONS": layer,
                                             "CLASS_FIELD": "crop", "OUTPUT": str(out), **TINY})
    assert result["OUTPUT"] == str(out) and result["MODEL"] is None
    feats = list(_load(out).getFeatures())
    assert [f["class"] for f in feats] == [f["truth"] for f in feats]
    assert all(abs(f["p_water"] + f["p_forest"] - 1) < 1e-5 for f in feats)
    report = tmp_path / "acc.json"
    acc = run("accuracy", {"OBJECTS": str(out), "OBJECTS_MAP_FIELD": "class", "OBJECTS_REFERENCE_FIELD": "truth",
                           "JSON": str(report), "HTML": str(tmp_path / "acc.html")})
    assert acc["OA"] == 1.0 and acc["AREA_OA"] == 1.0
    data = json.loads(report.read_text())
    assert data["n_samples"] == 6 and data["by_area"]["unit"] == "ha"
    assert data["by_area"]["total_area"] == pytest.approx((225 + 80 + 216 + 234 + 25 + 100) * 100 / 1e4, rel=1e-3)
    assert "By area" in (tmp_path / "acc.html").read_text()


def test_accuracy_by_area_weights_large_polygons_more(scene, tmp_path):
    """One big right polygon and two small wrong ones: OA by object 1/3, by area far higher."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    path = tmp_path / "objs.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("objs", srs=srs, geom_type=ogr.wkbPolygon)
    for name in ("class", "ref"):
        lyr.CreateField(ogr.FieldDefn(name, ogr.OFTInteger))
    for (x, size), (m, r) in zip([(0, 100), (200, 10), (300, 10)], [(1, 1), (1, 2), (2, 1)]):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("class", m)
        f.SetField("ref", r)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({x} 0, {x + size} 0, {x + size} {size}, {x} {size}, {x} 0))"))
        lyr.CreateFeature(f)
    ds = None
    acc = run("accuracy", {"OBJECTS": str(path), "OBJECTS_REFERENCE_FIELD": "ref", "JSON": str(tmp_path / "a.json")})
    assert acc["OA"] == pytest.approx(1 / 3)
    assert acc["AREA_OA"] == pytest.approx(10000 / 10200)


@pytest.mark.parametrize("case, message", [
    ("points_as_polygons", "POLYGONS: the layer 'points' holds points; objects are polygons"),
    ("both_labels", "Give the training classes one way: CLASS_FIELD (a field of the polygons) or LABEL_POINTS"),
    ("no_labels", "Give the training classes one way"),
    ("polygons_as_points", "LABEL_POINTS: the layer 'parcels' holds polygons; give points"),
])
def test_wrong_layers_are_refused_before_any_work_naming_the_parameter(scene, parcels, tmp_path, case, message):
    from qgis.core import QgsVectorLayer

    path, _ = parcels
    points = QgsVectorLayer(write_points(tmp_path / "points.gpkg", [scene.pixel_centre(5, 5)[0]],
                                         [scene.pixel_centre(5, 5)[1]], [1]), "points", "ogr")
    params = {"HSI": scene.hsi, "POLYGONS": path, "MODEL": str(tmp_path / "m.difflc"), **TINY}
    if case == "points_as_polygons":
        params.update(POLYGONS=points, CLASS_FIELD="class_id")
    elif case == "both_labels":
        params.update(CLASS_FIELD="crop", LABEL_POINTS=points, POINTS_FIELD="class_id")
    elif case == "polygons_as_points":
        params.update(LABEL_POINTS=QgsVectorLayer(path, "parcels", "ogr"), POINTS_FIELD="crop")
    assert message in refusal("trainobjectclassifier", params)
    assert not (tmp_path / "m.difflc").exists()


def test_class_field_all_null_is_refused_naming_layer_and_field(scene, tmp_path):
    path = _parcels(tmp_path / "empty_labels.gpkg", scene, values=(None,) * 6)
    message = refusal("trainandclassifyobjects", {"HSI": scene.hsi, "POLYGONS": path, "CLASS_FIELD": "crop",
                                                  "OUTPUT": str(tmp_path / "o.gpkg"), **TINY})
    assert message == ("The field 'crop' of the polygon layer 'empty_labels' is NULL or empty on every polygon: "
                       "fill in the class of some polygons, or give label points.") or \
        "is NULL or empty on every polygon" in message
    assert not (tmp_path / "o.gpkg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".difflc-")]


def test_a_pixel_model_given_to_classifyobjects_says_where_it_belongs(scene, parcels, tmp_path):
    from helpers_rasters import scene_points

    pts, _, _ = scene_points(scene, tmp_path / "labels.gpkg", per_class=4)
    model = tmp_path / "pixel.difflc"
    run("trainclassifier", {"HSI": scene.hsi, "LABELS": pts, "CLASS_FIELD": "class_id", "MODEL": str(model),
                            "SMOOTHING": 0, **TINY})
    message = refusal("classifyobjects", {"MODEL": str(model), "HSI": scene.hsi, "POLYGONS": parcels[0],
                                          "OUTPUT": str(tmp_path / "o.gpkg")})
    assert message.startswith("MODEL:") and "is a land-cover model" in message and "difflc:classify" in message
