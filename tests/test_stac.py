# SPDX-License-Identifier: Apache-2.0
"""The STAC catalogue of a run (issue 10, point 6): items, extensions, provenance, and loading it back.

A daily-composite job runs as a whole process on three synthetic daily orbits; its
``collection.json`` is read with pystac, checked against the COGs' own headers, and the
maps are loaded back through odc-stac and stackstac and compared with the COGs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from .test_resume import DAYS, cli, job

pystac = pytest.importorskip("pystac")
STEM = "xch4_area_north_china_0p05"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from eo_pipeline.samples import make_daily_orbits

    tmp = tmp_path_factory.mktemp("stac")
    orbits = make_daily_orbits(tmp / "orbits", days=3)
    cfg = job(tmp, orbits)
    cli("run", str(cfg), "-q")
    return tmp / "out", orbits


def _items(out: Path) -> list:
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    return sorted(collection.get_items(recursive=True), key=lambda i: i.id)


def _cog(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


def test_one_item_per_day_with_time_place_projection_and_raster_facts(run):
    out, orbits = run
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert collection.id == "resume"
    items = _items(out)
    assert [i.id for i in items] == [f"{STEM}_{d}" for d in DAYS]
    assert str(collection.extent.temporal.intervals[0][0])[:10] == "2023-07-15"
    for item, day, orbit in zip(items, DAYS, orbits, strict=True):
        iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        assert item.properties["start_datetime"] == f"{iso}T00:00:00Z"
        assert item.properties["end_datetime"] == f"{iso}T23:59:59Z"
        assert item.datetime.isoformat().startswith(iso)
        assert item.bbox == [105.0, 33.0, 120.0, 45.0]  # north_china_0p05
        assert item.geometry["type"] == "Polygon"
        cog = out / f"{STEM}_{day}.tif"
        data = item.assets["map"]
        assert data.roles == ["data"] and "cloud-optimized" in data.media_type
        assert Path(data.get_absolute_href()) == cog
        with rasterio.open(cog) as src:
            assert data.extra_fields["proj:code"] == "EPSG:4326"
            assert data.extra_fields["proj:shape"] == [src.height, src.width]
            assert data.extra_fields["proj:transform"] == list(src.transform)[:6]
            bands = data.extra_fields["raster:bands"]
            assert [b["unit"] for b in bands] == [src.tags(k)["units"] for k in range(1, src.count + 1)]
            assert {b["data_type"] for b in bands} == {"float32"} and {b["nodata"] for b in bands} == {"nan"}
        assert item.assets["anomaly"].roles == ["data"]
        assert Path(item.assets["anomaly"].get_absolute_href()) == out / f"{STEM}_anomaly_{day}.tif"
        assert item.assets["overview"].roles == ["overview"] and item.assets["overview"].media_type == "image/png"
        assert Path(item.assets["overview"].get_absolute_href()) == out / f"{STEM}_{day}_mean.png"
        assert Path(item.assets["anomaly_overview"].get_absolute_href()) == out / f"{STEM}_anomaly_{day}.png"
        assert Path(item.assets["netcdf"].get_absolute_href()) == out / f"{STEM}.nc"
        assert Path(item.assets["hotspots"].get_absolute_href()) == out / "xch4_hotspots.geojson"
        assert Path(item.assets["hotspots_table"].get_absolute_href()) == out / "xch4_hotspots.csv"
        assert Path(item.assets["regions"].get_absolute_href()) == out / "xch4_regions.csv"
        # provenance: the inputs of this day, processor versions, config hash, software
        p = item.properties
        assert [Path(i["path"]).name for i in p["eo_pipeline:inputs"]] == [orbit.name]
        assert p["eo_pipeline:inputs"][0]["size"] == orbit.stat().st_size
        assert p["eo_pipeline:config_hash"] == json.loads((out / "job_summary.json").read_text())["config_hash"]
        assert p["processing:software"]["eo_pipeline"]
        assert "2.5.0" in p["eo_pipeline:processor_versions"]
        with rasterio.open(cog) as src:  # the map says the same about its inputs
            assert src.tags()["input_files"] == orbit.name


def test_the_maps_load_back_through_odc_stac_with_the_cogs_values(run):
    odc_stac = pytest.importorskip("odc.stac")
    out, _ = run
    items = _items(out)
    cube = odc_stac.load(items, bands=["xch4_mean", "xch4_anomaly", "xch4_count"], chunks={})
    assert cube.sizes["time"] == 3 and cube.odc.geobox.crs.epsg == 4326
    for k, day in enumerate(DAYS):
        np.testing.assert_array_equal(cube.xch4_mean.isel(time=k).values, _cog(out / f"{STEM}_{day}.tif", 1))
        np.testing.assert_array_equal(cube.xch4_count.isel(time=k).values, _cog(out / f"{STEM}_{day}.tif", 2))
        np.testing.assert_array_equal(cube.xch4_anomaly.isel(time=k).values,
                                      _cog(out / f"{STEM}_anomaly_{day}.tif", 2))
    # the multi-band COG asset itself, band by band
    whole = odc_stac.load(items, bands=["map.1"], chunks={})
    np.testing.assert_array_equal(whole["map.1"].isel(time=2).values, _cog(out / f"{STEM}_{DAYS[2]}.tif", 1))


def test_the_maps_load_back_through_stackstac_with_the_cogs_values(run):
    stackstac = pytest.importorskip("stackstac")
    out, _ = run
    items = [i.make_asset_hrefs_absolute() for i in _items(out)]  # stackstac opens hrefs as they are
    cube = stackstac.stack(items, assets=["xch4_mean", "xch4_anomaly"], epsg=4326)
    assert cube.shape == (3, 2, 240, 300)
    for k, day in enumerate(DAYS):
        np.testing.assert_array_equal(cube.sel(band="xch4_mean").isel(time=k).values, _cog(out / f"{STEM}_{day}.tif"))
        np.testing.assert_array_equal(cube.sel(band="xch4_anomaly").isel(time=k).values,
                                      _cog(out / f"{STEM}_anomaly_{day}.tif", 2))


def test_the_catalogue_moves_with_the_folder(run, tmp_path):
    odc_stac = pytest.importorskip("odc.stac")
    out, _ = run
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    items = _items(moved)
    assert all(str(moved) in i.assets["xch4_mean"].get_absolute_href() for i in items)
    cube = odc_stac.load(items, bands=["xch4_mean"], chunks={})
    np.testing.assert_array_equal(cube.xch4_mean.isel(time=1).values, _cog(out / f"{STEM}_{DAYS[1]}.tif"))


def test_a_projected_grid_gets_its_crs_and_a_lon_lat_footprint(tmp_path, run):
    odc_stac = pytest.importorskip("odc.stac")
    _, orbits = run
    laea = ("+proj=laea +lat_0=39 +lon_0=116 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs")
    cfg = job(tmp_path, orbits[:1], grids={"laea_10km": {"crs": laea, "bbox": [-400000, -300000, 400000, 300000],
                                                         "resolution": 10000}},
              gridding={"grid": "laea_10km", "method": "area", "composite": "day"},
              output={"dir": str(tmp_path / "out"), "formats": ["geotiff"]}, anomaly=None, hotspots=None, regions=None)
    cli("run", str(cfg), "-q")
    (item,) = _items(tmp_path / "out")
    asset = item.assets["map"]
    assert asset.extra_fields["proj:code"] is None  # no EPSG code: the CRS as WKT2
    assert asset.extra_fields["proj:wkt2"].startswith("PROJCRS") and "Lambert" in asset.extra_fields["proj:wkt2"]
    assert asset.extra_fields["proj:shape"] == [60, 80]
    west, south, east, north = item.bbox
    assert 110 < west < 112 and 120 < east < 122 and 36 < south < 37 and 41 < north < 42  # 116 E, 39 N +- 400 km
    ring = np.array(item.geometry["coordinates"][0])
    assert len(ring) > 5  # the curved outline, not just 4 corners
    cube = odc_stac.load([item], bands=["xch4_mean"], chunks={})
    assert cube.odc.geobox.shape == (60, 80)
    np.testing.assert_array_equal(cube.xch4_mean.isel(time=0).values,
                                  _cog(tmp_path / "out" / f"xch4_area_laea_10km_{DAYS[0]}.tif"))


def test_a_rerun_remakes_a_deleted_catalogue_and_keeps_the_items_of_earlier_runs(tmp_path, run):
    _, orbits = run
    cfg = job(tmp_path, orbits[:1])
    cli("run", str(cfg), "-q")
    out = tmp_path / "out"
    assert [i.id for i in _items(out)] == [f"{STEM}_{DAYS[0]}"]
    job(tmp_path, orbits[:2])  # a new day: the catalogue gets its item and keeps the first day's
    cli("run", str(cfg), "-q")
    assert [i.id for i in _items(out)] == [f"{STEM}_{d}" for d in DAYS[:2]]
    (out / "collection.json").unlink()
    shutil.rmtree(out / "stac")
    proc = cli("run", str(cfg))
    assert "up to date" in proc.stderr
    assert [i.id for i in _items(out)] == [f"{STEM}_{d}" for d in DAYS[:2]]
