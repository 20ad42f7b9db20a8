"""The objects route's file side (issue 21) without QGIS: segmentobjects' GeoPackage, training on labelled
polygons (field or points), the classified copy and its style, the bad inputs."""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr, osr

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis"))

from helpers_rasters import EPSG, sample_pixels, synthetic_scene, write_points  # noqa: E402

from engine.errors import UserInputError  # noqa: E402
from engine.jobs.objects import (ObjectTrainRequest, PointLabels, PolygonInput, SegmentRequest,  # noqa: E402
                                 classify_objects, segment_objects, train_objects)
from engine.settings import PipelineSettings  # noqa: E402


def _settings():
    s = PipelineSettings()
    s.backbone.source = "untrained"
    s.tiles.stride = 32
    s.head.trees = 60
    s.device = "cpu"
    return s


def _features(path, layer=None):
    ds = ogr.Open(str(path))
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    rows = []
    for f in lyr:
        g = f.GetGeometryRef()
        rows.append({**f.items(), "_wkt": g.ExportToWkt() if g else None, "_valid": g.IsValid() if g else None,
                     "_area": g.GetArea() if g else 0.0})
    return rows


def _polygons(path, rects, values, epsg=EPSG, field="landcover", to_epsg=None, gt=None):
    """Rectangles (r0, r1, c0, c1) in pixels of the scene grid ``gt``, optionally written in another CRS."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    out_srs = srs
    transform = None
    if to_epsg:
        out_srs = osr.SpatialReference()
        out_srs.ImportFromEPSG(to_epsg)
        out_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(srs, out_srs)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer(Path(path).stem, srs=out_srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTInteger))
    for (r0, r1, c0, c1), v in zip(rects, values):
        x0, x1 = gt[0] + c0 * gt[1], gt[0] + c1 * gt[1]
        y0, y1 = gt[3] + r0 * gt[5], gt[3] + r1 * gt[5]
        f = ogr.Feature(layer.GetLayerDefn())
        if v is not None:
            f.SetField(field, int(v))
        g = ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))")
        if transform is not None:
            g.Transform(transform)
        f.SetGeometry(g)
        layer.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return synthetic_scene(tmp_path_factory.mktemp("objscene"), hole=(slice(5, 12), slice(60, 80)))


@pytest.fixture(scope="module")
def segments(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("segments") / "objects.gpkg"
    outcome = segment_objects(SegmentRequest(scene.hsi, None, str(out), _settings(), object_area_m2=60 * 100.0,
                                             compactness=1.0, window_rows=30))
    return outcome, out


def test_segmentobjects_writes_valid_polygons_with_ids_areas_and_no_nodata(scene, segments):
    outcome, out = segments
    assert outcome.windows >= 2 and outcome.objects > 50
    rows = _features(out)
    assert len(rows) == outcome.objects == outcome.polygons  # one polygon per object
    assert sorted(r["object_id"] for r in rows) == list(range(1, outcome.objects + 1))
    assert all(r["_valid"] for r in rows)
    for r in rows:
        assert r["area_m2"] == pytest.approx(r["pixels"] * 100.0) == pytest.approx(r["_area"])
        assert r["area_ha"] == pytest.approx(r["area_m2"] * 1e-4)
    # nodata (the hole) is in no polygon: polygons' area + hole = the scene
    total = sum(r["pixels"] for r in rows)
    assert total == 96 * 96 - 7 * 20
    assert not [p for p in os.listdir(out.parent) if p.startswith(".difflc-")]


def test_object_classifier_from_label_points_classifies_objects_styled(scene, segments, tmp_path):
    _, objects = segments
    rows, cols = sample_pixels(scene.truth, 6, seed=1, margin=4)
    xs, ys = scene.pixel_centre(rows, cols)
    points = write_points(tmp_path / "points.gpkg", xs, ys, scene.truth[rows, cols], field="class_id")
    request = ObjectTrainRequest(scene.hsi, None, PolygonInput(str(objects), "objects"), _settings(),
                                 points=PointLabels(points, "points", "class_id",
                                                    styles={"1": ("Water", "#1f78b4"), "2": ("Forest", "#33a02c")}),
                                 model_path=str(tmp_path / "objects.difflc"))
    trained = train_objects(request)
    assert trained.label_report["points"] == 12 and trained.label_report["used"] >= 4
    assert trained.metadata["format"] == "difflc-object-model"
    out = tmp_path / "classified.gpkg"
    result = classify_objects(trained.bundle, scene.hsi, None, PolygonInput(str(objects), "objects"), str(out))
    feats = _features(out)
    assert len(feats) == len(_features(objects))
    # the class of each object against the truth's majority inside it
    right = n = 0
    for f in feats:
        assert {"class", "class_name", "confidence", "p_water", "p_forest", "obj_pixels", "obj_note"} <= set(f)
        assert f["class"] in (1, 2) and f["class_name"] == {1: "Water", 2: "Forest"}[f["class"]]
        assert f["p_water"] + f["p_forest"] == pytest.approx(1.0, abs=1e-5)
        assert f["confidence"] == pytest.approx(max(f["p_water"], f["p_forest"]))
    ids = _burn(objects, scene)
    for f in feats:
        truth = scene.truth[ids == f["object_id"]]
        right += int(np.bincount(truth).argmax() == f["class"])
        n += 1
    assert right / n > 0.9, right / n
    assert sum(result.class_objects.values()) == n and result.null_objects == 0
    qml = (tmp_path / "classified.qml").read_text()
    assert 'attr="class"' in qml and 'label="Forest"' in qml and "51,160,44" in qml
    with sqlite3.connect(out) as db:
        (table, style, default), = db.execute("SELECT f_table_name, styleQML, useAsDefault FROM layer_styles")
    assert table == "classified" and 'label="Water"' in style and default


def _burn(path, scene):
    from osgeo import gdal

    ds = gdal.GetDriverByName("MEM").Create("", 96, 96, 1, gdal.GDT_Int32)
    ds.SetGeoTransform(scene.geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    src = ogr.Open(str(path))
    gdal.RasterizeLayer(ds, [1], src.GetLayer(0), options=["ATTRIBUTE=object_id"])
    return ds.ReadAsArray()


@pytest.fixture(scope="module")
def parcels(scene, tmp_path_factory):
    """Parcels in EPSG:4326 (the raster is UTM): some labelled, some NULL, one outside the raster, one smaller than
    a pixel, one only on nodata."""
    gt = scene.geotransform
    rects = [(40, 55, 45, 60), (20, 30, 50, 58), (60, 70, 55, 65),  # forest (the disk)
             (80, 92, 2, 20), (2, 15, 2, 20), (85, 95, 80, 95),  # water
             (45, 50, 5, 10), (30, 35, 40, 45),  # unlabelled
             (200, 210, 200, 210),  # outside the raster
             (50.6, 50.9, 50.6, 50.9),  # smaller than a pixel (no pixel centre), inside the disk
             (6, 11, 62, 78)]  # only nodata (the hole)
    values = [2, 2, 2, 1, 1, 1, None, None, None, None, None]
    folder = tmp_path_factory.mktemp("parcels")
    return _polygons(folder / "parcels.gpkg", rects, values, to_epsg=4326, gt=gt), rects, values


def test_parcels_in_another_crs_with_a_partly_filled_field_classified_nulls_kept_and_counted(scene, parcels,
                                                                                            tmp_path):
    path, rects, values = parcels
    messages = []
    from engine.progress import Progress

    progress = Progress(on_message=messages.append)
    request = ObjectTrainRequest(scene.hsi, scene.sar, PolygonInput(path, "parcels", "landcover"), _settings(),
                                 save=False)
    trained = train_objects(request, progress)
    assert trained.label_report["used"] == 6 and trained.bundle is None
    out = tmp_path / "parcels_classified.gpkg"
    result = classify_objects(None, scene.hsi, scene.sar, PolygonInput(path, "parcels"), str(out), progress,
                              trained=trained)
    feats = _features(out)
    assert len(feats) == len(rects)  # none dropped
    assert [f["class"] for f in feats[:6]] == [2, 2, 2, 1, 1, 1]
    assert feats[6]["class"] == 1 and feats[7]["class"] == 2  # the unlabelled ones: water, forest (the disk)
    assert feats[8]["class"] is None and feats[8]["obj_note"] == "outside the raster or empty"
    assert feats[9]["class"] == 2 and feats[9]["obj_note"] == "subpixel" and feats[9]["obj_pixels"] == 0
    assert feats[10]["class"] is None and feats[10]["obj_note"] == "no data"
    assert result.null_objects == 2 and result.subpixel_objects == 1
    assert any("2 polygon(s) kept with a NULL class: 1 outside the raster" in m for m in messages), messages
    # the copy keeps the source's CRS and fields
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "4326"
    assert [f["landcover"] for f in feats] == values
    # pixels pooled per parcel are the pixel centres inside it, transformed from EPSG:4326 to the raster's grid
    assert feats[0]["obj_pixels"] == 15 * 15 and feats[1]["obj_pixels"] == 10 * 8


def test_the_object_model_is_refused_by_pixel_classify_and_names_where_it_belongs(scene, parcels, tmp_path):
    from engine.jobs.bundle import BundleError, read_bundle_metadata

    path, _, _ = parcels
    model = tmp_path / "m.difflc"
    train_objects(ObjectTrainRequest(scene.hsi, None, PolygonInput(path, "parcels", "landcover"), _settings(),
                                     model_path=str(model)))
    with pytest.raises(BundleError, match=r"is an object model .* Classify objects \(difflc:classifyobjects\)"):
        read_bundle_metadata(str(model))
    with pytest.raises(UserInputError, match="SAR"):  # band identity checked as for pixel models
        classify_objects(str(model), scene.hsi, scene.sar, PolygonInput(path, "parcels"), str(tmp_path / "o.gpkg"))
    assert not (tmp_path / "o.gpkg").exists()


@pytest.mark.parametrize("case, message", [
    ("empty", "the polygon layer 'bad' has no polygons"),
    ("points", "the layer 'bad' holds points; objects are polygons"),
    ("all_null", "the field 'landcover' of the polygon layer 'bad' is NULL or empty on every polygon"),
    ("one_class", "the field 'landcover' of the layer 'bad' holds only one class ('class 1')"),
    ("no_field", "the polygon layer 'bad' has no field 'landcover'"),
])
def test_bad_polygon_inputs_are_refused_in_one_line_naming_layer_and_field(scene, tmp_path, case, message):
    gt = scene.geotransform
    path = tmp_path / "bad.gpkg"
    if case == "empty":
        _polygons(path, [], [], gt=gt)
    elif case == "points":
        write_points(path, [gt[0] + 50], [gt[3] - 50], [1], field="landcover")
    elif case == "all_null":
        _polygons(path, [(0, 5, 0, 5), (10, 15, 10, 15)], [None, None], gt=gt)
    elif case == "one_class":
        _polygons(path, [(0, 5, 0, 5), (10, 15, 10, 15)], [1, 1], gt=gt)
    else:
        _polygons(path, [(0, 5, 0, 5)], [1], gt=gt, field="other")
    model = tmp_path / "m.difflc"
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        train_objects(ObjectTrainRequest(scene.hsi, None, PolygonInput(str(path), "bad", "landcover"), _settings(),
                                         model_path=str(model)))
    assert "\n" not in str(info.value)
    assert not model.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".difflc-")]


def test_self_intersecting_polygons_are_repaired_and_counted(scene, tmp_path):
    gt = scene.geotransform
    x0, y0 = gt[0], gt[3]
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "bow.gpkg"))
    layer = ds.CreateLayer("bow", srs=srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("landcover", ogr.OFTInteger))
    bowtie = f"POLYGON (({x0} {y0}, {x0 + 200} {y0 - 200}, {x0 + 200} {y0}, {x0} {y0 - 200}, {x0} {y0}))"
    for wkt, v in ((bowtie, 1), (bowtie.replace(f"{x0} ", f"{x0 + 300} ").replace(f"{x0 + 200} ",
                                                                                  f"{x0 + 500} "), 1)):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("landcover", v)
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(f)
    ds = None
    from engine.data.vectors import read_polygons
    from engine.data.raster_io import read_info

    polys = read_polygons(str(tmp_path / "bow.gpkg"), "bow", read_info(scene.hsi), "landcover")
    assert polys.repaired == 2 and polys.n == 2


def test_a_cancel_at_any_check_leaves_no_output_and_no_temporary(scene, parcels, tmp_path):
    """Cancel at the first, a middle and the last progress check of a run: nothing at OUTPUT, no .qml, no
    temporary beside it."""
    from engine import files
    from engine.progress import Cancelled, Progress

    path, _, _ = parcels
    model = tmp_path / "m.difflc"
    train_objects(ObjectTrainRequest(scene.hsi, None, PolygonInput(path, "parcels", "landcover"), _settings(),
                                     model_path=str(model)))
    calls = {"n": 0, "stop": None}

    def cancel():
        calls["n"] += 1
        return calls["stop"] is not None and calls["n"] > calls["stop"]

    probe = tmp_path / "probe.gpkg"
    classify_objects(str(model), scene.hsi, None, PolygonInput(path, "parcels"), str(probe),
                     Progress(is_canceled=cancel))
    total = calls["n"]
    assert total > 5
    for stop in (0, total // 2, total - 1):
        calls.update(n=0, stop=stop)
        out = tmp_path / f"out{stop}" / "classified.gpkg"
        out.parent.mkdir()
        with pytest.raises(Cancelled):
            classify_objects(str(model), scene.hsi, None, PolygonInput(path, "parcels"), str(out),
                             Progress(is_canceled=cancel))
        files.remove_temporaries()  # what the algorithms' error boundary does
        assert list(out.parent.iterdir()) == [], stop


def test_segmentobjects_inside_a_mask_only(scene, tmp_path):
    from engine.jobs import MaskSpec

    gt = scene.geotransform
    x0, x1, y0, y1 = gt[0] + 10 * gt[1], gt[0] + 50 * gt[1], gt[3] + 20 * gt[5], gt[3] + 60 * gt[5]
    square = ogr.CreateGeometryFromWkt(f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))")
    out = tmp_path / "masked.gpkg"
    outcome = segment_objects(SegmentRequest(scene.hsi, None, str(out), _settings(), object_pixels=50,
                                             mask=MaskSpec("square", polygons_wkb=[bytes(square.ExportToWkb())])))
    rows = _features(out)
    assert sum(r["pixels"] for r in rows) == 40 * 40 and len(rows) == outcome.objects
    for r in rows:
        assert ogr.CreateGeometryFromWkt(r["_wkt"]).Within(square.Buffer(1e-6))


def test_an_empty_geometry_is_kept_counted_and_gets_no_pixel(scene, tmp_path):
    from engine.data.raster_io import read_info
    from engine.data.vectors import read_polygons

    path = _polygons(tmp_path / "e.gpkg", [(0, 5, 0, 5)], [1], gt=scene.geotransform)
    ds = ogr.Open(str(path), 1)
    layer = ds.GetLayer(0)
    f = ogr.Feature(layer.GetLayerDefn())
    f.SetField("landcover", 2)
    layer.CreateFeature(f)  # no geometry at all
    ds = None
    polys = read_polygons(path, "e", read_info(scene.hsi), "landcover")
    assert polys.n == 2 and polys.empty == 1 and polys.values == [1, 2]
    assert np.isfinite(polys.centroids[0]).all() and np.isnan(polys.centroids[1]).all()
