import numpy as np
import pytest

from engine.data.representations import (RepresentationModel, choose_rgb_bands, detect_db, detect_polarisation,
                                    fit_representations, positional_rgb)
from engine.settings import RepresentationSettings


def _scene(bands=20, h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, h, w))
    mix = rng.normal(size=(bands, 3))
    return (np.einsum("bk,khw->bhw", mix, base) + 0.05 * rng.normal(size=(bands, h, w)) + 5).astype(np.float32)


def _flat(x):
    return x.reshape(x.shape[0], -1)


def test_rgb_by_wavelength_skips_bad_bands():
    waves = list(np.linspace(400, 1000, 31))  # 20 nm steps: 640 → idx 12, 550 → 7.5, 460 → 3
    s = RepresentationSettings()
    rgb, rule = choose_rgb_bands({"wavelengths_nm": waves}, 31, set(), s)
    assert rule == "wavelength" and rgb[0] == 12 and rgb[2] == 3 and rgb[1] in (7, 8)
    rgb_bad, _ = choose_rgb_bands({"wavelengths_nm": waves}, 31, {12}, s)
    assert rgb_bad[0] in (11, 13)


def test_rgb_by_position_names_and_override():
    s = RepresentationSettings()
    assert positional_rgb(13) == [3, 2, 1]  # Sentinel-2 L1C: B4, B3, B2
    assert positional_rgb(180) == [21, 13, 5]  # even 400–2500 nm: 21 as the paper's Augsburg red band
    assert positional_rgb(224) == [26, 16, 6]
    assert positional_rgb(3) == [0, 1, 2]
    rgb, rule = choose_rgb_bands({"descriptions": ["B2", "B3", "B4", "B8"]}, 4, set(), s)
    assert (rgb, rule) == ([2, 1, 0], "band names")
    rgb, rule = choose_rgb_bands({}, 50, set(), RepresentationSettings(rgb_bands=(5, 3, 1)))
    assert (rgb, rule) == ([4, 2, 0], "user")
    with pytest.raises(ValueError, match="band 51 does not exist"):
        choose_rgb_bands({}, 50, set(), RepresentationSettings(rgb_bands=(51, 3, 1)))
    with pytest.raises(ValueError, match="bad band"):
        choose_rgb_bands({}, 50, {2}, RepresentationSettings(rgb_bands=(5, 3, 1)))


def test_fit_apply_ranges_nan_and_bad_bands():
    hsi = _scene()
    hsi[4] = np.nan  # an all-nodata band the metadata did not flag
    meta = {"band_count": 20, "wavelengths_nm": None, "bad_bands": [7]}
    model = fit_representations(_flat(hsi), None, meta, None, RepresentationSettings(), seed=0)
    assert 4 not in model.usable_bands and 7 not in model.usable_bands
    assert not set(model.rgb_bands) & {4, 7}
    scene = hsi.copy()
    scene[0, 3, 5] = np.nan  # nodata in a usable band
    scene[7, 10, 10] = 1e9  # garbage in the bad band must not matter
    out = model.apply(scene, None)
    assert set(out) == {"prgb", "pca"}
    for img in out.values():
        assert img.dtype == np.float32 and img.shape == (3, 24, 20)
        assert np.isnan(img[:, 3, 5]).all()
        finite = img[~np.isnan(img)]
        assert finite.min() >= -1 and finite.max() <= 1
        assert finite.min() == -1 and finite.max() == 1  # 2–98 % stretch saturates both ends
    assert np.isfinite(out["pca"][:, 10, 10]).all()
    spec = model.spectrum(scene, None)
    assert spec.shape == (18, 24, 20) and np.isnan(spec[:, 3, 5]).all()
    assert abs(np.nanmean(spec)) < 0.05


def test_pca_deterministic_stored_and_reapplied():
    hsi = _scene(seed=1)
    meta = {"band_count": 20, "wavelengths_nm": None, "bad_bands": []}
    a = fit_representations(_flat(hsi), None, meta, None, RepresentationSettings(), seed=0)
    b = fit_representations(_flat(hsi)[:, ::-1].copy(), None, meta, None, RepresentationSettings(), seed=5)
    np.testing.assert_allclose(a.pca_components, b.pca_components, atol=1e-8)
    comps = np.asarray(a.pca_components)
    np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-8)  # orthonormal: no whitening
    assert all(c[np.argmax(np.abs(c))] > 0 for c in comps)
    # first component matches numpy's SVD of the centred data (up to sign)
    x = _flat(hsi).astype(np.float64)
    u = np.linalg.svd(x - x.mean(1, keepdims=True), full_matrices=False)[0][:, 0]
    assert abs(abs(u @ comps[0]) - 1) < 1e-6
    # JSON round trip, applied to another scene → identical transform
    import json

    c = RepresentationModel.from_dict(json.loads(json.dumps(a.to_dict())))
    other = _scene(seed=2)
    for k, v in a.apply(other).items():
        np.testing.assert_array_equal(v, c.apply(other)[k])
    np.testing.assert_array_equal(a.spectrum(other), c.spectrum(other))


def _sar(db=True, n=2, h=16, w=16, seed=3):
    rng = np.random.default_rng(seed)
    lin = rng.gamma(2.0, 0.05, size=(n, h, w)) * np.array([1.0, 0.2, 0.5, 0.3][:n])[:, None, None]
    return (10 * np.log10(lin) if db else lin).astype(np.float32), lin


def test_sar_db_detection_and_override():
    db, lin = _sar()
    assert detect_db(_flat(db), {}, None) is True
    assert detect_db(_flat(lin), {}, None) is False
    assert detect_db(_flat(lin), {"units": ["dB", "dB"]}, None) is True
    assert detect_db(_flat(lin), {"descriptions": ["VV_db"]}, None) is True
    assert detect_db(_flat(db), {}, False) is False


def test_sar_dual_db_and_linear_give_the_same_image():
    hsi = _scene(h=16, w=16)
    db, lin = _sar()
    meta = {"band_count": 20, "bad_bands": []}
    s = RepresentationSettings()
    m_db = fit_representations(_flat(hsi), _flat(db), meta, {"descriptions": ["VV", "VH"]}, s)
    m_lin = fit_representations(_flat(hsi), _flat(lin), meta, {"descriptions": ["VV", "VH"]}, s)
    assert m_db.sar["db"] and not m_lin.sar["db"] and m_db.sar["mode"] == "dual"
    a, b = m_db.apply(hsi, db)["sar"], m_lin.apply(hsi, lin)["sar"]
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert a.min() >= -1 and a.max() <= 1
    # a spectrum carries SAR in dB whatever the input unit
    np.testing.assert_allclose(m_db.spectrum(hsi, db), m_lin.spectrum(hsi, lin), atol=1e-3)
    # pseudo-Pauli channels by hand (R = |C11 - C22|) before the stretch
    r = np.abs(lin[0] - lin[1])
    lo, hi = np.percentile(r, [2, 98])
    assert np.allclose(m_lin.sar["clip"][0], [lo, hi], rtol=1e-6)
    # forcing the wrong unit changes the result
    forced = fit_representations(_flat(hsi), _flat(lin), meta, None, RepresentationSettings(sar_db=True))
    assert forced.sar["db"] and not np.allclose(forced.apply(hsi, lin)["sar"], b, atol=1e-2)


def test_sar_band_order_from_descriptions():
    assert detect_polarisation(2, {"descriptions": ["VH", "VV"]}, "auto")["bands"] == {"C11": 1, "C22": 0}
    assert detect_polarisation(2, {}, "auto")["bands"] == {"C11": 0, "C22": 1}
    q = detect_polarisation(4, {"descriptions": ["HH", "HV", "VH", "VV"]}, "auto")
    assert q["mode"] == "quad" and q["bands"] == {"HH": 0, "HV": 1, "VV": 3, "VH": 2}
    assert detect_polarisation(3, {}, "auto")["mode"] == "quad"
    assert detect_polarisation(1, {}, "auto")["mode"] == "single"
    with pytest.raises(ValueError, match="needs at least 3"):
        detect_polarisation(2, {}, "quad")


def test_sar_quad_and_single_and_nan():
    hsi = _scene(h=16, w=16)
    meta = {"band_count": 20, "bad_bands": []}
    quad_db, quad_lin = _sar(n=3)
    m = fit_representations(_flat(hsi), _flat(quad_lin), meta, {"descriptions": ["HH", "HV", "VV"]},
                            RepresentationSettings())
    assert m.sar["mode"] == "quad"
    r = np.abs(quad_lin[0] - quad_lin[2])
    assert np.allclose(m.sar["clip"][0], np.percentile(r, [2, 98]), rtol=1e-6)
    single_db, _ = _sar(n=1)
    ms = fit_representations(_flat(hsi), _flat(single_db), meta, None, RepresentationSettings())
    assert ms.sar["mode"] == "single" and ms.sar["db"]
    s = single_db.copy()
    s[0, 2, 2] = np.nan
    img = ms.apply(hsi, s)["sar"]
    assert np.isnan(img[:, 2, 2]).all() and np.isfinite(img[:, 3, 3]).all()
    assert np.nanmin(img) == -1 and np.nanmax(img) == 1
    # SAR nodata does not blank the optical images, but does blank the spectrum
    out = ms.apply(hsi, s)
    assert np.isfinite(out["prgb"][:, 2, 2]).all()
    assert np.isnan(ms.spectrum(hsi, s)[:, 2, 2]).all()


def test_errors_are_clear():
    model = fit_representations(_flat(_scene()), None, {"band_count": 20}, None, RepresentationSettings())
    with pytest.raises(ValueError, match="20 bands"):
        model.apply(np.zeros((19, 4, 4), np.float32))
    with pytest.raises(ValueError, match="at least 3"):
        fit_representations(_flat(_scene(bands=4)), None, {"bad_bands": [0, 1]}, None, RepresentationSettings())


def test_band_metadata_is_typed_and_a_misspelt_key_is_an_error():
    from engine.data.representations import BandMeta

    sample = np.random.default_rng(0).normal(size=(5, 50))
    with pytest.raises(ValueError, match="unknown band metadata \\['bad_band'\\]"):
        fit_representations(sample, None, {"band_count": 5, "bad_band": [1]}, None, RepresentationSettings())
    with pytest.raises(ValueError, match="band_count"):
        BandMeta.of({"wavelengths_nm": None})
    typed = fit_representations(sample, None, BandMeta(5, bad_bands=(1,)), None, RepresentationSettings())
    assert 1 not in typed.usable_bands
