"""Issue 19: the operating system's failures while rasters are read and written (disk full, a folder made read-only,
a file deleted mid-run), complex (SAR SLC) bands, folders / subdatasets / VRTs with missing sources given as
rasters: each one line naming the file and what to do, raised as the engine's UserInputError kinds."""
from __future__ import annotations

import dataclasses
import gc
import os
import subprocess
import warnings

import numpy as np
import pytest
from osgeo import gdal, osr

from engine import errors
from engine.data import raster_io
from engine.data.labels import ClassInfo
from engine.data.raster_io import ClassifiedWriter, ImageWriter, RasterReader, raster_problem, read_info

CLASSES = [ClassInfo(1, "water", "#0000ff"), ClassInfo(2, "forest", "#00ff00")]


def _tif(path, array, dtype=gdal.GDT_Float32, gt=(500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)):
    array = np.asarray(array)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1], array.shape[0], dtype)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(array.shape[0]):
        ds.GetRasterBand(b + 1).WriteArray(array[b])
    ds = None
    return str(path)


@pytest.fixture
def ref(tmp_path):
    return read_info(_tif(tmp_path / "ref.tif", np.zeros((1, 300, 200), np.float32)))


@pytest.fixture
def dev_full(tmp_path, monkeypatch):
    """The writers' temporary is a link to /dev/full: every write fails with ENOSPC, deterministically, no root."""
    made = []

    def temp_beside(path, suffix=".tif"):
        link = tmp_path / f".difflc-full-{len(made)}{suffix}"
        os.symlink("/dev/full", link)
        made.append(link)
        return str(link)

    monkeypatch.setattr(raster_io.files, "temp_beside", temp_beside)
    return made


def _fill(writer, ref):
    rng = np.random.default_rng(0)
    for row in range(0, ref.height, 64):
        n = min(64, ref.height - row)
        writer.write(row, 0, rng.integers(1, 3, (n, ref.width)), rng.random((n, ref.width)))


def test_disk_full_names_the_output_its_folder_and_the_size_it_needs(tmp_path, ref, dev_full, capfd):
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    with pytest.raises(errors.OutputWriteError) as info:
        with ClassifiedWriter(str(out), ref, CLASSES) as writer:
            _fill(writer, ref)
    message = str(info.value)
    assert message == (f"no space left on the disk of {out.parent} while writing map.tif: it needs up to 58.6 KiB "
                       "(200×300 pixels × 1 band(s) × 1 byte(s) (Byte), before compression): free that much space "
                       "there, or choose an output folder on another disk")
    assert not out.exists() and not any(p.exists() or p.is_symlink() for p in dev_full)  # temporaries discarded
    del info, writer  # the failure's traceback held nothing still open: GDAL closed every file already
    gc.collect()
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "ERROR 1" not in err, err  # GDAL's close errors stay off stderr


def test_disk_full_while_writing_an_image(tmp_path, ref, dev_full, capfd):
    writer = ImageWriter(str(tmp_path / "pca.tif"), ref, ["PC1", "PC2", "PC3"])
    with pytest.raises(errors.OutputWriteError, match=r"while writing pca\.tif: it needs up to 703\.1 KiB \(200×300 "
                                                      r"pixels × 3 band\(s\) × 4 byte\(s\) \(Float32\)"):
        try:
            writer.write(0, np.ones((3, ref.height, ref.width), np.float32))
            writer.commit()
        except errors.UserInputError:
            writer.discard()  # what the jobs do with a writer whose output failed
            raise
    assert not (tmp_path / "pca.tif").exists() and not any(p.is_symlink() for p in dev_full)
    del writer
    gc.collect()
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "ERROR 1" not in err, err


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (we run as root in CI; a test that cannot mount fails, it does not skip)."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_folder_made_read_only_after_the_checks_is_named(small_disk):
    """The folder passed the output checks, then became read-only (remounted; as root, chmod would not stop us)."""
    info = read_info(_tif(small_disk.parent / "r.tif", np.zeros((1, 40, 40), np.float32)))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(errors.UserInputError) as err:
        with ClassifiedWriter(str(small_disk / "map.tif"), info, CLASSES) as writer:
            writer.write(0, 0, np.ones((40, 40), np.int64))
    assert str(small_disk) in str(err.value) and "map.tif" in str(err.value), err.value
    assert "Read-only file system" in str(err.value) and "choose a folder you can write to" in str(err.value)


def test_a_write_refused_half_way_names_the_folder_and_what_to_do(tmp_path, ref):
    """The text GDAL gives when the folder stops taking data in the middle of a write (e.g. a network share
    remounted read-only), as the writers translate it."""
    failure = raster_io.write_failure(RuntimeError("_tiffWriteProc:Permission denied; TIFFAppendToStrip:Write error"),
                                      str(tmp_path / "map.tif"), ref, 1, gdal.GDT_Byte)
    assert isinstance(failure, errors.OutputWriteError)
    assert str(failure) == (f"the folder {tmp_path} stopped taking files while map.tif was written (_tiffWriteProc:"
                            "Permission denied): make it writable again, or choose another output folder")
    gone = raster_io.write_failure(RuntimeError("x.tif: No such file or directory"), str(tmp_path / "map.tif"), ref, 1,
                                   gdal.GDT_Byte)
    assert str(gone) == (f"the folder {tmp_path} was removed or moved while map.tif was written: choose an output "
                         "folder that stays in place")


def test_a_real_full_disk_is_recognised_even_when_gdal_does_not_say_so(small_disk):
    """GDAL sometimes only says 'TIFFAppendToStrip:Write error at scanline 0': the folder's free space decides."""
    info = read_info(_tif(small_disk.parent / "r.tif", np.zeros((1, 150, 150), np.float32)))
    for size in (150, 120):
        grid = dataclasses.replace(info, width=size, height=size)
        with pytest.raises(errors.OutputWriteError, match=f"^no space left on the disk of {small_disk} while writing "):
            with ClassifiedWriter(str(small_disk / "map.tif"), grid, CLASSES,
                                  confidence_path=str(small_disk / "conf.tif")) as writer:
                _fill(writer, grid)
        assert os.listdir(small_disk) == []


def test_an_input_deleted_mid_run_is_named(tmp_path):
    """A VRT opens its source at the first read: deleting the source after the checks is seen by the reader."""
    src = _tif(tmp_path / "src.tif", np.ones((3, 8, 8), np.float32))
    gdal.BuildVRT(str(tmp_path / "hsi.vrt"), [src])
    reader = RasterReader(str(tmp_path / "hsi.vrt"), name="HSI")
    os.remove(src)
    with pytest.raises(errors.UserInputError) as info:
        reader.read(0, 0, 8, 8)
    assert str(info.value).startswith(f"the HSI raster {tmp_path / 'hsi.vrt'} (or a file it refers to) was deleted or "
                                      "moved while the run was reading it (")
    assert str(info.value).endswith("put it back and run again")


@pytest.mark.parametrize("text, cause", [
    ("_tiffWriteProc:No space left on device", errors.NO_SPACE),
    ("TIFFAppendToStrip:Write error at scanline 0", ""),
    ("/data/x.tif: Permission denied", errors.NO_PERMISSION),
    ("Read-only file system", errors.NO_PERMISSION),
    ("src.tif: No such file or directory", errors.NO_FILE),
    ("IReadBlock failed at X offset 0, Y offset 0", ""),
])
def test_the_common_system_failures_are_recognised_in_one_place(text, cause):
    assert errors.io_cause(RuntimeError(text)) == cause
    assert errors.io_cause(OSError(28, "No space left on device")) == errors.NO_SPACE


# ------------------------------------------------------------------------------------------- complex bands

def _complex(path, dtype=gdal.GDT_CFloat32):
    z = np.full((2, 6, 6), 3 + 4j, np.complex64)
    z[1] = 6 - 8j
    return _tif(path, z, dtype)


@pytest.mark.parametrize("dtype", [gdal.GDT_CFloat32, gdal.GDT_CInt16])
def test_a_complex_sar_is_read_as_its_amplitude_and_says_so(tmp_path, dtype):
    path = _complex(tmp_path / "slc.tif", dtype)
    logged = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning (real part kept) would fail here
        reader = RasterReader(path, name="SAR", log=logged.append, complex_amplitude=True)
        data = reader.read(0, 0, 6, 6)
    kind = gdal.GetDataTypeName(dtype)
    assert logged == [f"SAR bands 1, 2 of slc.tif are complex ({kind}): their amplitude |z| is used"]
    np.testing.assert_allclose(data[0], 5.0)
    np.testing.assert_allclose(data[1], 10.0)


def test_a_complex_sar_on_another_grid_is_warped_as_its_amplitude(tmp_path):
    path = _complex(tmp_path / "slc.tif")
    ref = read_info(_tif(tmp_path / "hsi.tif", np.zeros((3, 12, 12), np.float32),
                         gt=(500000.0, 5.0, 0.0, 5800000.0, 0.0, -5.0)))
    reader = RasterReader(path, ref=ref, name="SAR", complex_amplitude=True)
    np.testing.assert_allclose(reader.read(0, 0, 12, 12)[0], 5.0, rtol=1e-5)


def test_a_complex_band_where_amplitude_makes_no_sense_is_refused_naming_the_band(tmp_path):
    path = _tif(tmp_path / "hsi.tif", np.ones((4, 6, 6), np.complex64), gdal.GDT_CFloat32)
    with pytest.raises(errors.UserInputError) as info:
        RasterReader(path, name="HSI")
    assert str(info.value).startswith("HSI band 1 of hsi.tif is complex (CFloat32): the HSI must hold real values; ")


# ------------------------------------------------------------------------------------------- what a raster path is

def test_a_folder_given_as_a_raster_says_it_is_a_folder(tmp_path):
    assert raster_problem(str(tmp_path)) == f"{tmp_path} is a folder, not a raster file: choose the raster file inside it"


def test_a_vrt_whose_source_is_missing_names_the_source_before_any_read(tmp_path):
    src = _tif(tmp_path / "b1.tif", np.ones((1, 8, 8), np.float32))
    gdal.BuildVRT(str(tmp_path / "stack.vrt"), [src])
    os.remove(src)
    with pytest.raises(errors.CorruptFileError) as info:
        read_info(str(tmp_path / "stack.vrt"))
    assert str(info.value) == (f"the VRT {tmp_path / 'stack.vrt'} refers to the source file {src}, which does not exist "
                               "(moved or deleted): put it back, or build the VRT again from the files where they "
                               "are now")


def _netcdf_two_variables(path):
    """A netCDF with two 3-band variables (the multidimensional API), so GDAL lists two subdatasets."""
    assert gdal.GetDriverByName("netCDF") is not None, "GDAL's netCDF driver is needed for this test"
    ds = gdal.GetDriverByName("netCDF").CreateMultiDimensional(str(path))
    root = ds.GetRootGroup()
    dims = [root.CreateDimension(name, None, None, n) for name, n in (("band", 3), ("y", 5), ("x", 4))]
    for name in ("reflectance", "quality"):
        array = root.CreateMDArray(name, dims, gdal.ExtendedDataType.Create(gdal.GDT_Float32))
        array.Write(np.arange(60, dtype=np.float32).reshape(3, 5, 4))
    ds = None
    return str(path)


def test_a_file_with_subdatasets_lists_them_and_the_subdataset_name_is_accepted(tmp_path):
    path = _netcdf_two_variables(tmp_path / "cube.nc")
    problem = raster_problem(path)
    assert problem == (f'{path} holds 2 subdataset(s) and no raster of its own: give one of them as the raster, e.g. '
                       f'NETCDF:"{path}":reflectance (subdatasets: NETCDF:"{path}":reflectance, '
                       f'NETCDF:"{path}":quality)')
    name = f'NETCDF:"{path}":quality'
    assert raster_problem(name) is None
    info = read_info(name)
    assert (info.band_count, info.width, info.height) == (3, 4, 5)
    assert RasterReader(name, name="HSI").read(0, 0, 5, 4).shape == (3, 5, 4)
    assert raster_problem(f'NETCDF:"{path}":nope').startswith(f'GDAL cannot open the raster NETCDF:"{path}":nope (')
