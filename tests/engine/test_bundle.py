import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from engine.jobs.bundle import (BundleError, BundleMismatchError, check_inputs, load_bundle, read_bundle_metadata,
                           save_bundle)


def _meta():
    return {"classes": [{"value": 1, "name": "water", "color": "#0000ff"}],
            "inputs": {"hsi": {"band_count": 3, "wavelengths_nm": [460.0, 550.0, 640.0], "bad_bands": [],
                               "descriptions": ["", "", ""]},
                       "sar": {"band_count": 2, "descriptions": ["VV", "VH"], "units": ["", ""]}},
            "seed": 0, "pixel_size": [10.0, 10.0], "stats": np.float32(1.5)}


def test_round_trip(tmp_path):
    path = tmp_path / "model.difflc"
    tensors = {"head.0.weight": torch.randn(4, 3), "backbone.x": torch.arange(5, dtype=torch.int64)}
    save_bundle(str(path), _meta(), tensors)
    meta, back = load_bundle(str(path))
    assert meta["format"] == "difflc-model" and meta["format_version"] == 1 and meta["created"]
    assert meta["stats"] == 1.5 and meta["classes"][0]["name"] == "water"
    assert set(back) == set(tensors)
    for k in tensors:
        assert torch.equal(back[k], tensors[k])
    assert read_bundle_metadata(str(path)) == meta
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["metadata.json", "weights.safetensors"]
        assert "\n  " in zf.read("metadata.json").decode()  # pretty
    assert [p.name for p in tmp_path.iterdir()] == ["model.difflc"]  # no temp file left


def test_rejects_non_bundles(tmp_path):
    pk = tmp_path / "evil.pt"
    pk.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(BundleError, match="not a Diffusion Land Cover model bundle"):
        load_bundle(str(pk))
    tz = tmp_path / "torch.pt"
    torch.save({"w": torch.zeros(2)}, tz)  # a zip file with pickle inside
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(str(tz))
    fake = tmp_path / "fake.difflc"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"format": "difflc-model", "format_version": 99}))
        zf.writestr("weights.safetensors", b"")
    with pytest.raises(BundleError, match="update the plugin"):
        read_bundle_metadata(str(fake))
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(str(tmp_path / "missing.difflc"))


def test_check_inputs_messages():
    meta = _meta()
    hsi = {"band_count": 3, "wavelengths_nm": [461.0, 550.0, 641.0], "descriptions": []}
    sar = {"band_count": 2}
    check_inputs(meta, hsi, sar)  # within tolerance
    with pytest.raises(BundleMismatchError, match="has 4 bands, the model was trained on 3"):
        check_inputs(meta, {**hsi, "band_count": 4}, sar)
    with pytest.raises(BundleMismatchError, match="band 3, 660.00 nm here vs 640.00"):
        check_inputs(meta, {**hsi, "wavelengths_nm": [460.0, 550.0, 660.0]}, sar)
    with pytest.raises(BundleMismatchError, match="give a SAR layer"):
        check_inputs(meta, hsi, None)
    with pytest.raises(BundleMismatchError, match="SAR raster has 1 band"):
        check_inputs(meta, hsi, {"band_count": 1})
    no_sar = {**meta, "inputs": {**meta["inputs"], "sar": None}}
    with pytest.raises(BundleMismatchError, match="without SAR"):
        check_inputs(no_sar, hsi, sar)
