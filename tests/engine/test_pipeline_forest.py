"""The default pipeline with its forest head, end to end on a small synthetic scene (no GDAL, no QGIS)."""
import numpy as np
import pytest

from engine.heads.classifier import ForestHead
from engine.heads.forest import shift_features, train_forest
from engine.tasks.landcover import TrainingPixels, bundle_payload, fit, from_bundle, predict_scene
from engine.data.readers import ArrayReader, StackedReader
from engine.settings import PipelineSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(n=80, bands=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    truth = ((yy - 30) ** 2 + (xx - 45) ** 2 < 22 ** 2).astype(np.int64)
    spectra = np.array([np.linspace(0.1, 0.3, bands), np.linspace(0.4, 0.1, bands)], np.float32)
    hsi = spectra[truth].transpose(2, 0, 1) + rng.normal(scale=0.03, size=(bands, n, n)).astype(np.float32)
    rows, cols = [], []
    for c in (0, 1):
        r, k = np.nonzero(truth == c)
        pick = rng.choice(r.size, 10, replace=False)
        rows.append(r[pick])
        cols.append(k[pick])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return hsi.astype(np.float32), truth, TrainingPixels(rows, cols, truth[rows, cols], 2)


def _settings():
    s = PipelineSettings()
    s.device, s.seed = "cpu", 0
    s.backbone.compact_steps = 2
    s.backbone.patch_pool = 8
    s.head.trees = 30
    s.representation.rgb_bands = (6, 4, 2)
    return s


def _predict(model, reader):
    out = np.full((reader.height, reader.width), -9, np.int64)

    def write(row, index, _conf):
        out[row:row + index.shape[0]] = index

    predict_scene(model, reader, write)
    return out


def test_forest_pipeline_maps_the_scene_and_survives_the_bundle():
    hsi, truth, labels = _scene()
    reader = StackedReader(ArrayReader(hsi), None)
    meta = {"band_count": hsi.shape[0], "wavelengths_nm": None, "bad_bands": []}
    model = fit(reader, meta, None, labels, _settings())
    assert isinstance(model.head, ForestHead) and model.report["feature_check"] is not None
    pred = _predict(model, reader)
    assert (pred >= 0).all() and (pred == truth).mean() > 0.9
    metadata, tensors = bundle_payload(model)
    again = from_bundle(metadata, tensors, device="cpu")
    np.testing.assert_array_equal(_predict(again, reader), pred)


def test_a_bands_only_forest_skips_the_network_with_the_same_map():
    hsi, truth, labels = _scene(seed=1)
    reader = StackedReader(ArrayReader(hsi), None)
    meta = {"band_count": hsi.shape[0], "wavelengths_nm": None, "bad_bands": []}
    model = fit(reader, meta, None, labels, _settings())
    n_feat, n_all = sum(model.group_sizes[:-1]), sum(model.group_sizes)
    spectrum = model.representations.spectrum(*reader.split(reader.read(0, 0, reader.height, reader.width)))
    x = spectrum[:, labels.rows, labels.cols].T
    bands = shift_features(train_forest(x, labels.class_index, 2, n_trees=30, seed=0), n_feat, n_all)
    config = dict(model.head.config, feature_check={"diffusion_features_used": False})
    model.head = ForestHead(bands, config)
    with_network = dict(config, feature_check={"diffusion_features_used": True})

    calls = []
    real = model.extractor

    class Counting:
        dim, modalities, groups = real.dim, real.modalities, real.groups

        def __call__(self, batch):
            calls.append(batch.shape[0])
            return real(batch)

    model.extractor = Counting()
    skipped = _predict(model, reader)
    assert calls == []  # the network never ran
    model.head = ForestHead(bands, with_network)
    ran = _predict(model, reader)
    assert calls  # ... and here it did
    np.testing.assert_array_equal(skipped, ran)
    assert (skipped == truth).mean() > 0.9


def test_row_ranges_equal_the_whole_map_with_smoothing():
    """Work units of a large scene (engine.jobs.batch): any row range maps exactly as the whole scene does, halo
    of the probability smoothing included."""
    hsi, truth, labels = _scene(n=150, seed=2)
    reader = StackedReader(ArrayReader(hsi), None)
    meta = {"band_count": hsi.shape[0], "wavelengths_nm": None, "bad_bands": []}
    s = _settings()
    s.spatial.sigma = 1.5
    s.head.feature_check_p = 0.0  # keep the network in the path
    model = fit(reader, meta, None, labels, s)
    whole = {}

    def keep(store):
        def write(row, index, conf, probs):
            for k in range(index.shape[0]):
                assert row + k not in store
                store[row + k] = (index[k].copy(), conf[k].copy(), probs[:, k].copy())
        return write

    predict_scene(model, reader, keep(whole), probabilities=True)
    assert sorted(whole) == list(range(150))
    for first, stop in ((0, 7), (40, 41), (47, 113), (140, 150)):
        part = {}
        predict_scene(model, reader, keep(part), probabilities=True, rows=(first, stop))
        assert sorted(part) == list(range(first, stop))
        for r, (index, conf, probs) in part.items():
            np.testing.assert_array_equal(index, whole[r][0])
            np.testing.assert_array_equal(conf, whole[r][1])
            np.testing.assert_array_equal(probs, whole[r][2])


def test_a_damaged_model_description_is_refused_on_load():
    hsi, truth, labels = _scene(seed=3)
    reader = StackedReader(ArrayReader(hsi), None)
    meta = {"band_count": hsi.shape[0], "wavelengths_nm": None, "bad_bands": []}
    metadata, tensors = bundle_payload(fit(reader, meta, None, labels, _settings()))
    assert from_bundle(metadata, tensors, device="cpu").backbone_info.kind == "compact"
    bad = dict(metadata, backbone=dict(metadata["backbone"], fingerprnt="x"))  # a misspelt key
    with pytest.raises(ValueError, match="unknown keys \\['fingerprnt'\\]"):
        from_bundle(bad, tensors, device="cpu")
    groups = [list(g) for g in metadata["feature_groups"]]
    groups[0][1] = 500  # another timestep than the settings and network give
    with pytest.raises(ValueError, match="feature groups"):
        from_bundle(dict(metadata, feature_groups=groups), tensors, device="cpu")


def test_a_labelled_pixel_is_described_the_same_in_training_and_in_prediction():
    """The head learns from the features the map is predicted from: each pixel's home window (engine.tasks.tiling),
    in training (labelled_features) and in prediction (predict_tiled + head_inputs) alike."""
    from engine.progress import Progress
    from engine.tasks.landcover import head_inputs, labelled_features
    from engine.tasks.tiling import predict_tiled

    hsi, truth, labels = _scene(n=150, seed=4)
    reader = StackedReader(ArrayReader(hsi), None)
    meta = {"band_count": hsi.shape[0]}
    s = _settings()
    s.tiles.stride = 40  # overlapping windows: the home-window rule decides
    model = fit(reader, meta, None, labels, s)
    train_x = labelled_features(reader, model.representations, model.extractor, labels, s, Progress())
    seen = np.full((train_x.shape[1], 150, 150), np.nan, np.float32)

    def predict_patches(block, need):
        x, _ = head_inputs(reader, model.representations, model.extractor, block, True)
        return np.where(need[:, None], x, np.nan)

    def write(row, values):
        seen[:, row:row + values.shape[1]] = values

    predict_tiled(150, 150, reader.read, predict_patches, train_x.shape[1], write, s.tiles, batch_size=4)
    np.testing.assert_array_equal(seen[:, labels.rows, labels.cols].T, train_x)
