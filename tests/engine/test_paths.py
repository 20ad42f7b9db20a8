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
