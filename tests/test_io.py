"""loradyn.io: atomic writes and the netCDF round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr

from loradyn.errors import LoradynError
from loradyn.io import (
    TMP_MARK,
    atomic_savefig,
    atomic_write,
    atomic_write_text,
    load_netcdf,
    save_netcdf,
)


def test_atomic_write_replaces_and_creates_folder(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and TMP_MARK in tmp.name
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["out.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, exc):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(exc):
        with atomic_write(target, fsync=True) as tmp:
            tmp.write_text("half")
            raise exc
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_text_and_mkdir_false(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "héllo\n", fsync=True)
    assert path.read_text(encoding="utf-8") == "héllo\n"
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "b.txt", "x", mkdir=False)
    assert not (tmp_path / "missing").exists()


def test_atomic_savefig_format_from_extension(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    try:
        path = atomic_savefig(fig, tmp_path / "f.png")
    finally:
        plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["f.png"]


def test_netcdf_round_trip_bool(tmp_path):
    ds = xr.Dataset(
        {"ok": (("x",), np.array([True, False, True])), "v": (("x",), np.arange(3.0))},
        coords={"x": [0, 1, 2]},
    )
    ds["ok"].attrs["long_name"] = "flag"
    path = save_netcdf(ds, tmp_path / "r.nc")
    assert ds["ok"].dtype == bool and "loradyn_bool" not in ds["ok"].attrs
    back = load_netcdf(path)
    assert back["ok"].dtype == bool
    assert back["ok"].attrs == {"long_name": "flag"}
    xr.testing.assert_identical(back, ds)


def test_netcdf_missing_file_and_folder(tmp_path):
    with pytest.raises(LoradynError, match="does not exist"):
        load_netcdf(tmp_path / "nope.nc")
    ds = xr.Dataset({"v": (("x",), np.arange(2.0))})
    with pytest.raises(LoradynError, match="create it first"):
        save_netcdf(ds, tmp_path / "nofolder" / "r.nc")


def test_results_reexports():
    from loradyn.engines import results

    assert results.save_netcdf is save_netcdf and results.load_netcdf is load_netcdf
