# SPDX-License-Identifier: Apache-2.0
"""The committed sample scenes: layouts, synthetic marks, manifest, determinism, size."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
import rasterio

import eo_pipeline as eo
from eo_pipeline.samples import make_samples

from .conftest import SAMPLES


def _manifest():
    return json.loads((SAMPLES / "MANIFEST.json").read_text())


def test_committed_scenes_are_small():
    total = sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file())
    assert total < 20 * 1024 * 1024


def test_every_scene_opens_with_its_reader_and_is_marked_synthetic():
    for entry in _manifest()["files"]:
        if "reader" not in entry:
            continue
        path = SAMPLES / entry["file"]
        ds = eo.open_product(path)
        assert ds.attrs["reader"] == entry["reader"]
        assert ds.attrs["synthetic"] == "true"
        assert int(ds.valid.sum()) == entry["n_valid_default_qa"]


def test_s5p_layout_matches_the_operational_product():
    path = next(SAMPLES.glob("S5P_OFFL_L2__CH4____*_29781_*.nc"))
    with netCDF4.Dataset(path) as nc:
        g = nc["PRODUCT"]
        assert g["qa_value"].dtype == np.uint8 and g["qa_value"].scale_factor == np.float32(0.01)
        assert g["methane_mixing_ratio_bias_corrected"]._FillValue == np.float32(9.96921e36)
        assert g["methane_mixing_ratio_bias_corrected"].dimensions == ("time", "scanline", "ground_pixel")
        assert g["SUPPORT_DATA/GEOLOCATIONS/latitude_bounds"].dimensions[-1] == "corner"
        assert g["delta_time"].units.startswith("milliseconds since 2023-07-15")
        assert nc["METADATA/GRANULE_DESCRIPTION"].ProductShortName == "L2__CH4___"
        assert g["latitude"].filters()["zlib"]


def test_forest_pair_and_regions():
    tc = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_treecover2000_*.tif"))
    ly = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_lossyear_*.tif"))
    with rasterio.open(tc) as a, rasterio.open(ly) as b:
        assert a.dtypes[0] == "uint8" and a.crs.to_epsg() == 4326
        assert a.transform == b.transform and a.res == pytest.approx((0.00025, 0.00025))
        assert a.tags()["synthetic"] == "true"
        assert a.read(1).max() <= 100 and b.read(1).max() <= 23
    regions = json.loads((SAMPLES / "regions_north_china.geojson").read_text())
    names = {f["id"] for f in regions["features"]}
    assert {"shanxi", "shaanxi", "inner_mongolia_sc", "yuyang", "yuyang_forest_aoi"} <= names


def test_manifest_records_the_planted_signals():
    m = _manifest()
    species = {s["species"] for s in m["planted_signals"]}
    assert species == {"xch4", "xco2"}
    for s in m["planted_signals"]:
        assert (SAMPLES / s["file"]).exists()
        assert s["amplitude"] > 0 and s["sigma_km"] > 0
    assert m["no_signal_files"]


def test_planted_ch4_signal_is_in_the_data():
    m = _manifest()
    sig = next(s for s in m["planted_signals"] if s["species"] == "xch4")
    ds = eo.open_product(SAMPLES / sig["file"])
    lat, lon, x, v = (ds[k].values for k in ("latitude", "longitude", "xch4", "valid"))
    near = v & (np.hypot((lon - sig["lon"]) * np.cos(np.radians(sig["lat"])), lat - sig["lat"]) < 0.05)
    far = v & (np.hypot(lon - sig["lon"], lat - sig["lat"]) > 1.5)
    assert np.mean(x[near]) - np.median(x[far]) == pytest.approx(sig["amplitude"], rel=0.25)


def test_generator_is_deterministic(tmp_path):
    make_samples(tmp_path)
    committed = sorted(p.name for p in SAMPLES.iterdir() if p.is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        a, b = SAMPLES / name, tmp_path / name
        if name.endswith((".json", ".md", ".geojson")):
            assert a.read_text() == b.read_text(), name
        elif name.endswith(".tif"):
            with rasterio.open(a) as ra, rasterio.open(b) as rb:
                np.testing.assert_array_equal(ra.read(), rb.read())
                assert ra.tags() == rb.tags()
        else:
            with netCDF4.Dataset(a) as na, netCDF4.Dataset(b) as nb:
                _same_group(na, nb)


def _same_group(ga, gb):
    assert {k: str(ga.getncattr(k)) for k in ga.ncattrs()} == {k: str(gb.getncattr(k)) for k in gb.ncattrs()}
    assert list(ga.variables) == list(gb.variables)
    for name, va in ga.variables.items():
        vb = gb.variables[name]
        np.testing.assert_array_equal(np.asarray(va[:]), np.asarray(vb[:]), err_msg=f"{ga.path}/{name}")
    assert list(ga.groups) == list(gb.groups)
    for name in ga.groups:
        _same_group(ga.groups[name], gb.groups[name])
