# SPDX-License-Identifier: Apache-2.0
"""Removals, loss emissions and net flux; the removal-factor table; the forest CLI and job stage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from eo_pipeline.errors import ConfigError
from eo_pipeline.forest import compute_forest
from eo_pipeline.forest_stage import run_forest, user_zone
from eo_pipeline.grid import GridSpec
from eo_pipeline.sinks import (
    C_TO_CO2,
    DEFAULT_TABLE,
    NET_CONVENTION,
    Factor,
    ZoneFactors,
    carbon_table,
    load_removal_factors,
    removals_tco2,
)
from eo_pipeline.units import parse_area

from .conftest import SAMPLES

TC = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_treecover2000_*.tif"))
LY = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_lossyear_*.tif"))
EM = next(SAMPLES.glob("gfw_forest_carbon_gross_emissions_*.tif"))
REGIONS = SAMPLES / "regions_north_china.geojson"
RAIN_GT20 = "tropical/tropical_rain_forest/north_and_south_america/natural_gt20y"


def test_county_seed_figure():
    """4.822 million mu with the factor the county uses gives about 700,000 t CO2 a year."""
    area_ha = parse_area("4.822e6 mu")
    assert area_ha == pytest.approx(321_466.67, rel=1e-6)
    implied_co2 = 700_000 / area_ha  # t CO2/ha/yr
    assert implied_co2 == pytest.approx(2.1775, abs=1e-3)
    factor_c = implied_co2 / C_TO_CO2  # t C/ha/yr
    assert factor_c == pytest.approx(0.594, abs=1e-3)
    assert removals_tco2("4.822e6 mu", 0.594) == pytest.approx(700_000, rel=0.001)
    assert removals_tco2(4.822e6, 0.594, unit="mu") == pytest.approx(removals_tco2(area_ha, 0.594))
    assert removals_tco2("3214.67 km2", 0.594) == pytest.approx(700_000, rel=0.001)


def test_default_table_has_cited_factors():
    t = load_removal_factors()
    z = t.zone(RAIN_GT20)
    assert z.removal_factor.value == pytest.approx(2.3 * 1.22 * 0.47, abs=1e-3)  # agb_growth x (1+R) x CF
    assert z.removal_factor.low < z.removal_factor.value < z.removal_factor.high
    assert z.carbon_fraction.value == 0.47 and z.root_to_shoot.value == 0.22
    raw = yaml.safe_load(DEFAULT_TABLE.read_text())
    for key, spec in raw["zones"].items():
        assert "Table 4.9" in spec["agb_growth"]["source"], key
        if spec.get("root_to_shoot"):
            assert "Table 4.4" in spec["root_to_shoot"]["source"], key


def test_missing_zone_and_incomplete_zone(tmp_path):
    t = load_removal_factors()
    with pytest.raises(ConfigError, match="no zone 'temperate/temperate_continental_forest/asia/natural_gt20y'"):
        t.zone("temperate/temperate_continental_forest/asia/natural_gt20y")
    with pytest.raises(ConfigError, match="no removal factor.*has agb_growth"):
        t.zone("tropical/tropical_dry_forest/north_and_south_america/natural_gt20y")
    # a user table adds the zone; overrides replace single fields
    user = tmp_path / "rf.yaml"
    user.write_text(yaml.safe_dump({"zones": {"temperate/custom/asia/natural_gt20y": {
        "agb_growth": {"value": 1.0, "low": 0.5, "high": 1.5}, "root_to_shoot": 0.25,
        "agb_density": {"value": 60.0, "low": 40.0, "high": 80.0}}}}))
    t2 = load_removal_factors(user, overrides={RAIN_GT20: {"removal_factor": {"value": 5.0, "units": "t CO2/ha/yr"}}})
    z = t2.zone("temperate/custom/asia/natural_gt20y")
    assert z.removal_factor.value == pytest.approx(1.0 * 1.25 * 0.47)
    assert (z.removal_factor.low, z.removal_factor.high) == pytest.approx((0.5 * 1.25 * 0.47, 1.5 * 1.25 * 0.47))
    assert t2.zone(RAIN_GT20).removal_factor.value == pytest.approx(5.0 / C_TO_CO2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: [1, 2]\n")
    with pytest.raises(ConfigError, match="zones"):
        load_removal_factors(bad)
    with pytest.raises(ConfigError, match="low <= value <= high"):
        Factor.of({"value": 1.0, "low": 2.0}, "x")


def _aoi_result(**kw):
    import geopandas as gpd

    gdf = gpd.read_file(REGIONS)
    gdf = gdf[gdf["id"] == "yuyang_forest_aoi"].assign(region="aoi")
    return compute_forest(TC, LY, regions=gdf, **kw)


def test_removals_emissions_and_net_by_hand():
    res = _aoi_result(emissions=EM)
    z = user_zone({"value": 0.594, "low": 0.5, "high": 0.7})
    df = carbon_table(res, "2000-2023", zone=z)
    ys = list(range(2000, 2024))
    sums = res.regions[0]
    tc_ha = sums.treecover_m2(ys)[0] / 1e4
    np.testing.assert_allclose(df["removals_tco2"], tc_ha * 0.594 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(df["removals_tco2_low"], tc_ha * 0.5 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(df["loss_emissions_tco2e"], sums.by_year(ys, "emissions_mg")[0], rtol=1e-12)
    np.testing.assert_allclose(df["net_tco2e"], df["loss_emissions_tco2e"] - df["removals_tco2"], rtol=1e-12)
    assert (df["net_tco2e_low"] <= df["net_tco2e"]).all() and (df["net_tco2e"] <= df["net_tco2e_high"]).all()
    assert (df["net_tco2e"] < 0).all()  # these shelterbelts are a net sink in every year
    assert (df["net_sign_convention"] == NET_CONVENTION).all() and "negative = net sink" in NET_CONVENTION
    # units: every area column in ha, km2 and mu
    np.testing.assert_allclose(df["treecover_mu"], df["treecover_ha"] * 15)
    np.testing.assert_allclose(df["loss_km2"], df["loss_ha"] / 100)
    for col in df.columns:
        if df[col].dtype.kind == "f" and col not in ("year",):
            assert any(u in col for u in ("_ha", "_km2", "_mu", "tco2", "per_ha_yr")), col


def test_emissions_from_table_density_with_ranges():
    res = _aoi_result()
    z = ZoneFactors("test", Factor(1.0, 0.8, 1.2), Factor(0.3, 0.2, 0.4), Factor(50.0, 30.0, 70.0), Factor(0.47, 0.47, 0.47))
    df = carbon_table(res, "2000-2023", zone=z).set_index("year")
    loss = df["loss_ha"]
    np.testing.assert_allclose(df["loss_emissions_tco2e"], loss * 50 * 1.3 * 0.47 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(df["loss_emissions_tco2e_low"], loss * 30 * 1.2 * 0.47 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(df["loss_emissions_tco2e_high"], loss * 70 * 1.4 * 0.47 * 44 / 12, rtol=1e-12)
    np.testing.assert_allclose(df["net_tco2e_high"], df["loss_emissions_tco2e_high"] - df["removals_tco2_low"])
    # a zone without AGB density and no emissions layer: removals only, no net column
    df2 = carbon_table(res, "2000-2001", zone=user_zone(0.6))
    assert "removals_tco2" in df2 and "net_tco2e" not in df2 and "loss_emissions_tco2e" not in df2


def test_emissions_from_a_biomass_raster(tmp_path):
    with rasterio.open(TC) as r:
        profile = r.profile
    profile.update(dtype="float32", nodata=None)
    bio = tmp_path / "agb.tif"
    with rasterio.open(bio, "w", **profile) as dst:
        dst.write(np.full((profile["height"], profile["width"]), 40.0, "f4"), 1)
    res = _aoi_result(biomass=bio)
    df = carbon_table(res, "2000-2023", zone=user_zone(0.6, root_to_shoot=0.25))
    np.testing.assert_allclose(df["loss_emissions_tco2e"], df["loss_ha"] * 40 * 1.25 * 0.47 * 44 / 12, rtol=1e-9)


def test_run_forest_writes_table_maps_and_quicklook(tmp_path):
    from rio_cogeo.cogeo import cog_validate

    run = run_forest(TC, LY, out=tmp_path / "f.csv", emissions=EM, regions=REGIONS, name_field="id",
                     select=["yuyang_forest_aoi"], grid="yuyang_forest_0p0025", removal_factor=0.594,
                     years="2000-2023")
    names = sorted(p.split("/")[-1] for p in run.outputs)
    assert names == ["f.csv", "f_cells.csv", "f_forest_fraction_2023.png", "f_forest_fraction_2023.tif", "f_net_flux_2023.png",
                     "f_net_flux_2023.tif", "f_removals_2023.tif"]
    table = pd.read_csv(tmp_path / "f.csv")
    assert len(table) == 24 and set(table["region"]) == {"yuyang_forest_aoi"}
    for tif in tmp_path.glob("*.tif"):
        assert cog_validate(str(tif))[0]
        with rasterio.open(tif) as r:
            assert "negative = net sink" in r.tags()["net_sign_convention"] and r.tags()["units"]
    with rasterio.open(tmp_path / "f_removals_2023.tif") as r:
        dens = r.read(1)
    # per-ha removals density never exceeds the factor (cells are at most fully forested)
    assert np.nanmax(dens) <= 0.594 * 44 / 12 + 1e-4 and np.nanmin(dens) >= 0
    with pytest.raises(ConfigError, match="ending in .csv"):
        run_forest(TC, LY, out=tmp_path / "f.txt")
    with pytest.raises(ConfigError, match="no region"):
        run_forest(TC, LY, out=tmp_path / "g.csv", regions=REGIONS, name_field="id", select=["atlantis"])
    with pytest.raises(ConfigError, match="choose the zone"):
        run_forest(TC, LY, out=tmp_path / "g.csv", removal_factors=DEFAULT_TABLE)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "eo_pipeline.cli", *args], capture_output=True, text=True)


def test_cli_forest(tmp_path):
    out = tmp_path / "forest.csv"
    r = _cli("forest", "--treecover", str(TC), "--lossyear", str(LY), "--regions", str(REGIONS), "--name-field", "id",
             "--select", "yuyang_forest_aoi", "--years", "2000-2023", "--zone", RAIN_GT20, "-o", str(out))
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert {"region", "year", "treecover_ha", "loss_ha", "treecover_mu", "removals_tco2"} <= set(df.columns)
    assert "removals" in r.stderr and "yuyang_forest_aoi" in r.stderr
    # one clear line for each kind of bad input, no traceback
    r = _cli("forest", "--treecover", str(TC), "--zone", "temperate/nowhere", "-o", str(out))
    assert r.returncode == 2 and "no zone 'temperate/nowhere'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli("forest", "--treecover", str(tmp_path / "missing.tif"), "-o", str(out))
    assert r.returncode == 2 and "missing.tif: no such file" in r.stderr
    r = _cli("forest", "--treecover", str(TC), "--removal-factor", "x", "-o", str(out))
    assert r.returncode == 2 and "VALUE:LOW:HIGH" in r.stderr


def test_region_outside_the_rasters_gives_nan_carbon_rows():
    import geopandas as gpd
    import shapely

    gdf = gpd.GeoDataFrame({"region": ["far"]}, geometry=[shapely.box(10.0, 10.0, 10.1, 10.1)], crs="EPSG:4326")
    with pytest.warns(Warning, match="outside the treecover rasters"):
        res = compute_forest(TC, LY, emissions=EM, regions=gdf)
    df = carbon_table(res, "2000-2002", zone=user_zone(0.6))
    for col in ("treecover_ha", "loss_emissions_tco2e", "removals_tco2", "net_tco2e", "net_tco2e_high"):
        assert df[col].isna().all(), col
    assert (df["note"] == "outside the rasters").all()


def test_bad_forest_options_write_nothing(tmp_path):
    """A map year outside the table, a grid off the rasters, a class raster of unknown year: errors, no files."""
    with pytest.raises(ConfigError, match="map_year 1999 is not among the years"):
        run_forest(TC, LY, out=tmp_path / "f.csv", grid="yuyang_forest_0p0025", years="2000-2005", map_year=1999)
    with pytest.raises(ConfigError, match="does not overlap the treecover rasters"):
        run_forest(TC, LY, out=tmp_path / "f.csv", grid=GridSpec.from_bbox([0.0, 0.0, 1.0, 1.0], 0.1))
    classes = tmp_path / "in" / "landcover_classes.tif"  # no year in the name
    classes.parent.mkdir()
    classes.write_bytes(TC.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="which year this land-cover raster shows"):
        run_forest(classes, out=out / "f.csv", landcover="worldcover")
    assert [p.name for p in tmp_path.iterdir()] == ["in"] and not out.exists()
