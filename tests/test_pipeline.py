# SPDX-License-Identifier: Apache-2.0
"""The main job on the sample scenes, configuration errors, and the GeoTIFF outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from eo_pipeline.config import config_hash, load_config
from eo_pipeline.errors import ConfigError
from eo_pipeline.pipeline import PHASES, run

from .conftest import ROOT, SAMPLES

TC_SAMPLE = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_treecover2000_*.tif"))


def demo_config(tmp_path: Path, **overrides) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    doc["inputs"] = [str(SAMPLES / "*.nc"), str(SAMPLES / "*.nc4")]
    doc["output"]["dir"] = str(tmp_path / "out")
    if "regions" in doc:
        doc["regions"]["file"] = str(SAMPLES / "regions_north_china.geojson")
    if "forest" in doc:
        for key in ("treecover", "lossyear", "emissions", "regions"):
            if doc["forest"].get(key):
                doc["forest"][key] = str(SAMPLES / Path(doc["forest"][key]).name)
    doc.update(overrides)
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo job, run once for the tests of this module."""
    tmp = tmp_path_factory.mktemp("demo")
    cfg = load_config(demo_config(tmp))
    return cfg, run(cfg), tmp / "out"


def test_demo_job_writes_one_cog_per_species(demo_run):
    from rio_cogeo.cogeo import cog_validate

    cfg, result, out = demo_run
    tifs = sorted(t for t in out.glob("*.tif") if "_anomaly" not in t.name and not t.name.startswith("forest"))
    assert sorted(t.name.split("_")[0] for t in tifs) == ["xch4", "xco", "xco2"]
    for tif in tifs:
        valid, errors, _ = cog_validate(str(tif))
        assert valid, errors
        with rasterio.open(tif) as r:
            assert r.crs.to_epsg() == 4326 and r.res == pytest.approx((0.05, 0.05))
            assert r.descriptions[0].endswith("_mean") and r.dtypes[0] == "float32"
            assert np.isnan(r.nodata)
            tags = r.tags()
            assert tags["config_hash"] == config_hash(cfg) and tags["units"] in ("ppb", "ppm", "mol m-2")
            assert tags["software"].startswith("eo_pipeline")
            mean = r.read(1)
            assert np.isfinite(mean).any()
    assert len(list(out.glob("*_mean.png"))) == 3 and len([p for p in out.glob("*.nc") if not p.name.startswith("forest")]) == 3
    for sp in ("xch4", "xco", "xco2"):
        assert (out / f"{sp}_hotspots.geojson").exists() and (out / f"{sp}_regions.csv").exists()
        with rasterio.open(next(out.glob(f"{sp}_area_*_anomaly.tif"))) as r:
            assert r.tags()["anomaly_method"] in ("moving_median", "daily_median")
            assert "xch4_zscore" in r.descriptions or f"{sp}_zscore" in r.descriptions
    summary = json.loads((out / "job_summary.json").read_text())
    assert summary["config_hash"] == config_hash(cfg) and len(summary["inputs"]) == 5
    # the run's wall time, phase by phase, in order; the phases add up to the whole
    phases = summary["phase_seconds"]
    assert list(phases) == list(PHASES) and all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(summary["seconds"], abs=0.01)
    assert phases["computing"] > phases["planning"] and result.phases["computing"] == pytest.approx(phases["computing"],
                                                                                                    abs=1e-3)
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert result.outputs


def test_demo_finds_the_planted_hotspots_and_tabulates_regions(demo_run):
    import pandas as pd

    out = demo_run[2]
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    for sig in manifest["planted_signals"]:
        h = pd.read_csv(out / f"{sig['species']}_hotspots.csv")
        assert len(h) == 1
        assert abs(h.lon[0] - sig["lon"]) <= 0.05 and abs(h.lat[0] - sig["lat"]) <= 0.05
    assert len(pd.read_csv(out / "xco_hotspots.csv")) == 0
    table = pd.read_csv(out / "xch4_regions.csv").set_index("region")
    assert table.loc["shanxi", "n_hotspots"] == 1 and table.loc["shaanxi", "n_hotspots"] == 0
    assert {"mean", "median", "weighted_mean", "n_soundings", "coverage_fraction", "mean_anomaly"} <= set(table.columns)


def test_demo_map_shows_the_planted_ch4_enhancement(demo_run):
    manifest = json.loads((SAMPLES / "MANIFEST.json").read_text())
    sig = next(s for s in manifest["planted_signals"] if s["species"] == "xch4")
    with rasterio.open(next(demo_run[2].glob("xch4_area_*0p05.tif"))) as r:
        mean = r.read(1)
        row, col = r.index(sig["lon"], sig["lat"])
        window = mean[row - 1:row + 2, col - 1:col + 2]
        background = np.nanmedian(mean)
    assert np.nanmax(window) - background > 0.6 * sig["amplitude"]


@pytest.mark.parametrize("patch, message", [
    ({"gridding": {"grid": {"bbox": [0, 0, 1, 1], "resolution": -0.1}}}, "gridding.grid.resolution"),
    ({"gridding": {"grid": "atlantis_0p1"}}, "unknown grid 'atlantis_0p1'"),
    ({"gridding": {"grid": "north_china_0p1", "method": "nearest"}}, "gridding.method"),
    ({"qa_threshold": 50}, "qa_threshold"),
    ({"inputs": ["/nonexistent/*.nc"]}, "matched no file"),
    ({"reader_options": {"s5p_ch5": {}}}, "unknown reader"),
    ({"colour": "blue"}, "colour"),
    ({"hotspots": {}, "anomaly": None}, "hotspots need an anomaly stage"),
    ({"regions": {"file": "/nowhere/regions.geojson"}}, "does not exist"),
    ({"anomaly": {"method": "daily_median", "overrides": {"xch4": {"radius": 3}}}}, "unknown setting"),
])
def test_config_errors_name_the_key(tmp_path, patch, message):
    path = demo_config(tmp_path, **patch)
    if "regions" in patch:  # demo_config points regions at the samples before the patch applies
        doc = yaml.safe_load(path.read_text())
        doc["regions"] = patch["regions"]
        path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        run(load_config(path))


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_run_failure_leaves_nothing_half_written(tmp_path):
    path = demo_config(tmp_path, inputs=[str(SAMPLES / "*.nc"), str(tmp_path / "broken.nc")])
    (tmp_path / "broken.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    proc = subprocess.run([sys.executable, "-m", "eo_pipeline.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "broken.nc" in proc.stderr
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


def test_demo_job_runs_the_forest_stage(demo_run):
    """The demo's forest section: table, maps and quicklooks; the county factor reproduces its figure."""
    import pandas as pd

    cfg, result, out = demo_run
    table = pd.read_csv(out / "forest.csv")
    assert table["region"].unique().tolist() == ["yuyang_forest_aoi"] and table["year"].tolist() == list(range(2000, 2024))
    np.testing.assert_allclose(table["removal_factor_tco2_per_ha_yr"], 0.594 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(table["removals_tco2"], table["treecover_ha"] * 0.594 * 44 / 12, rtol=1e-12)
    assert (table["net_tco2e"] < 0).all()
    for name in ("forest_forest_fraction_2023.tif", "forest_removals_2023.tif", "forest_net_flux_2023.tif",
                 "forest_forest_fraction_2023.png"):
        assert (out / name).exists() and str(out / name) in result.outputs


def test_forest_config_errors(tmp_path):
    doc = yaml.safe_load(demo_config(tmp_path).read_text())
    doc["forest"]["zone"] = "tropical/x"
    p = tmp_path / "both.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="either zone .* or removal_factor"):
        load_config(p)
    doc["forest"].pop("zone")
    doc["forest"]["treecover"] = str(tmp_path / "nothing_*.tif")
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="forest.treecover: no file matches"):
        load_config(p)
    doc["forest"]["treecover"] = str(TC_SAMPLE)
    doc["forest"]["min_cover"] = 130
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="forest.min_cover"):
        load_config(p)
