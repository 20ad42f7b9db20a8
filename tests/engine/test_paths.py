"""engine/paths.py: where the backbone checkpoint is looked for (torch- and QGIS-free)."""
from pathlib import Path

from engine import paths


def test_cache_dir_env_overrides_xdg_and_home(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFLC_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "diffusion_landcover"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "diffusion_landcover"
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(tmp_path / "mine"))
    assert paths.cache_dir() == tmp_path / "mine"
    assert paths.default_backbone_path() == tmp_path / "mine" / "64x64_diffusion.pt"
    assert not (tmp_path / "mine").exists()  # looking must not create folders


def test_find_backbone_order_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DIFFLC_BACKBONE", str(tmp_path / "explicit.pt"))
    assert paths.find_backbone() is None
    assert paths.backbone_candidates() == [tmp_path / "explicit.pt", tmp_path / "cache" / "64x64_diffusion.pt"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "64x64_diffusion.pt").write_bytes(b"c")
    assert paths.find_backbone() == tmp_path / "cache" / "64x64_diffusion.pt"
    (tmp_path / "explicit.pt").write_bytes(b"e")
    assert paths.find_backbone() == tmp_path / "explicit.pt"
    monkeypatch.delenv("DIFFLC_BACKBONE")
    assert paths.find_backbone() == tmp_path / "cache" / "64x64_diffusion.pt"


def test_paths_module_imports_nothing_heavy():
    source = Path(paths.__file__).read_text()
    for name in ("torch", "qgis", "osgeo", "numpy"):
        assert f"import {name}" not in source


def test_resolve_backbone_auto_prefers_installed_imagenet_then_prior(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLC_BACKBONE", raising=False)
    prior = tmp_path / "prior.safetensors"
    monkeypatch.setattr(paths, "shipped_prior", lambda: prior)
    monkeypatch.setattr(paths, "AUTO_FALLBACK", "prior")
    assert paths.resolve_backbone("auto", None)[0] == "untrained"  # no prior file: the untrained network
    prior.write_bytes(b"p")
    kind, path, why = paths.resolve_backbone("auto", None)
    assert (kind, path) == ("prior", prior) and "no ImageNet checkpoint" in why
    monkeypatch.setattr(paths, "AUTO_FALLBACK", "untrained")
    kind, path, why = paths.resolve_backbone("auto", None)
    assert (kind, path) == ("untrained", None) and "no ImageNet checkpoint" in why
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "64x64_diffusion.pt").write_bytes(b"c")
    kind, path, why = paths.resolve_backbone("auto", None)
    assert (kind, path) == ("imagenet", tmp_path / "cache" / "64x64_diffusion.pt") and "download cache" in why
    monkeypatch.setenv("DIFFLC_BACKBONE", str(tmp_path / "mine.pt"))
    (tmp_path / "mine.pt").write_bytes(b"m")
    kind, path, why = paths.resolve_backbone("auto", None)
    assert path == tmp_path / "mine.pt" and "$DIFFLC_BACKBONE" in why
    # explicit choices
    assert paths.resolve_backbone("prior", None)[:2] == ("prior", prior)
    assert paths.resolve_backbone("scene", None)[0] == "scene"
    assert paths.resolve_backbone("untrained", None)[0] == "untrained"
    assert paths.resolve_backbone("scene", "x.pt")[:2] == ("imagenet", Path("x.pt"))  # the parameter wins


def test_resolve_backbone_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFLC_BACKBONE", raising=False)
    monkeypatch.setattr(paths, "shipped_prior", lambda: tmp_path / "missing.safetensors")
    import pytest

    with pytest.raises(ValueError, match="no ImageNet ADM checkpoint found"):
        paths.resolve_backbone("imagenet", None)
    with pytest.raises(ValueError, match="shipped prior .* is missing"):
        paths.resolve_backbone("prior", None)
    with pytest.raises(ValueError, match="unknown backbone source"):
        paths.resolve_backbone("imagenet64", None)


def test_the_prior_ships_with_its_manifest():
    import json

    prior = paths.shipped_prior()
    assert prior.is_file(), "resources/priors must hold the shipped prior"
    manifest = json.loads(prior.with_suffix(".json").read_text())
    assert manifest["weights"] == prior.name and prior.stat().st_size <= 20e6
    used = {f["file"] for f in manifest["corpus"]}
    assert not any("enmap" in f or "salinas" in f for f in used)  # the evaluation scenes stay unseen
    for key in ("steps", "batch_size", "seed", "loss_final_500", "code_version", "weights_sha256"):
        assert key in manifest
