# SPDX-License-Identifier: Apache-2.0
"""Forest area by year: hand-computed cases, a brute-force reference, real Hansen crops, bad input."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections import deque
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize
from rasterio.transform import from_origin

from eo_pipeline import forest_area_by_year
from eo_pipeline.errors import ConfigError, EOPipelineError, QualityWarning
from eo_pipeline.forest import RasterValueError, compute_forest, parse_years, pixel_row_areas
from eo_pipeline.grid import GridSpec, ellipsoidal_band_area
from eo_pipeline.io.rasters import Mosaic

from .conftest import SAMPLES, shared_file

WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563
RES = 0.00025

HANSEN_TC = "forest/Hansen_GFC-2023-v1.11_treecover2000_20N_080W.mapme-crop.tif"
HANSEN_LY = "forest/Hansen_GFC-2023-v1.11_lossyear_20N_080W.mapme-crop.tif"
GFW_EM = "forest/gfw_forest_carbon_gross_emissions_Mg_CO2e_px_20N_080W.mapme-crop.tif"
AOI = "forest/gfw_sample.mapme-aoi.gpkg"


def write_tif(path: Path, data: np.ndarray, *, west: float, north: float, res: float = RES, crs: str = "EPSG:4326",
              nodata: float | None = None) -> Path:
    profile = {"driver": "GTiff", "dtype": data.dtype.name, "count": 1, "width": data.shape[1],
               "height": data.shape[0], "crs": crs, "transform": from_origin(west, north, res, res), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def band_area(lat_n: np.ndarray, res: float) -> np.ndarray:
    """Closed-form (authalic) ellipsoidal area of one pixel per row, m² -- independent of pyproj."""
    return ellipsoidal_band_area(lat_n - res, lat_n, WGS84_A, WGS84_F) * (res / 360.0)


# ------------------------------------------------------------------------------ brute-force reference
def flood_labels(mask: np.ndarray) -> np.ndarray:
    """4-connected labels by breadth-first search (no scikit-image)."""
    lab = np.zeros(mask.shape, dtype=int)
    n = 0
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if lab[r0, c0]:
            continue
        n += 1
        lab[r0, c0] = n
        q = deque([(r0, c0)])
        while q:
            r, c = q.popleft()
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1] and mask[rr, cc] and not lab[rr, cc]:
                    lab[rr, cc] = n
                    q.append((rr, cc))
    return lab


def brute_force(tc, ly, west, north, geom, min_cover, min_size_ha, years, sphere=False, res=RES):
    """The issue's definitions, pixel by pixel: fractions by shapely on every pixel."""
    rows, cols = tc.shape
    lat_n = north - res * np.arange(rows)
    if sphere:
        a_row = 6378137.0**2 * math.radians(res) * np.abs(np.sin(np.radians(lat_n)) - np.sin(np.radians(lat_n - res)))
    else:
        a_row = band_area(lat_n, res)
    transform = from_origin(west, north, res, res)
    if geom is None:
        frac = np.ones(tc.shape)
        touched = np.ones(tc.shape, bool)
    else:
        frac = np.zeros(tc.shape)
        for r in range(rows):
            for c in range(cols):
                box = shapely.box(west + c * res, north - (r + 1) * res, west + (c + 1) * res, north - r * res)
                frac[r, c] = shapely.intersection(box, geom).area / box.area
        touched = rasterize([(geom, 1)], out_shape=tc.shape, transform=transform, all_touched=True).astype(bool)
    forest = (tc >= min_cover) & touched
    lab = flood_labels(forest)
    w = frac * a_row[:, None]
    keep = np.zeros(tc.shape, bool)
    for k in range(1, lab.max() + 1):
        if w[lab == k].sum() / 1e4 > min_size_ha:
            keep |= lab == k
    total = w[keep].sum() / 1e4
    out = []
    for y in years:
        lost_before = w[keep & (ly >= 1) & (ly <= y - 2000)].sum() / 1e4
        loss = w[keep & (ly == y - 2000)].sum() / 1e4 if y > 2000 else 0.0
        out.append((total - lost_before, loss))
    return out


@st.composite
def forest_case(draw):
    rows = draw(st.integers(4, 14))
    cols = draw(st.integers(4, 14))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    tc = rng.choice([0, 10, 29, 30, 31, 55, 100], size=(rows, cols), p=[0.2, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15])
    ly = np.where(rng.random((rows, cols)) < 0.25, rng.integers(1, 6, (rows, cols)), 0)
    lat = draw(st.floats(-60, 60))
    west, north = 10.0, float(np.round(lat, 3))
    # a random star-shaped polygon around the raster's centre (may poke out of it)
    cx, cy = west + cols * RES / 2, north - rows * RES / 2
    k = draw(st.integers(3, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(0.2, 0.8, k) * max(rows, cols) * RES
    geom = shapely.Polygon(np.c_[cx + rad * np.cos(ang), cy + rad * np.sin(ang)])
    if not geom.is_valid or geom.area == 0:
        geom = shapely.box(cx - 2 * RES, cy - 2 * RES, cx + 1.3 * RES, cy + 1.7 * RES)
    min_size = draw(st.sampled_from([0.0, 0.05, 0.2]))
    strip = draw(st.sampled_from([cols, 2 * cols, 3 * cols + 1, 10_000]))
    return tc.astype("u1"), ly.astype("u1"), west, north, geom, min_size, strip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=forest_case(), sphere=st.booleans())
def test_matches_brute_force_reference(case, sphere):
    """Random canopy/loss/polygon/min-size/strip size: equal to the pixel-by-pixel definitions."""
    tc, ly, west, north, geom, min_size, strip = case
    years = [2000, 2001, 2002, 2003, 2005]
    with tempfile.TemporaryDirectory() as d:
        tcp = write_tif(Path(d) / "tc.tif", tc, west=west, north=north)
        lyp = write_tif(Path(d) / "ly.tif", ly, west=west, north=north)
        regions = gpd.GeoDataFrame({"region": ["r"]}, geometry=[geom], crs="EPSG:4326")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QualityWarning)  # polygons may poke out of the raster
            res = compute_forest(tcp, lyp, regions=regions, min_size_ha=min_size, strip_pixels=strip,
                                 cell_area="sphere" if sphere else "ellipsoid")
        df = res.area_table(years)
    raster = shapely.box(west, north - tc.shape[0] * RES, west + tc.shape[1] * RES, north)
    if shapely.intersection(geom, raster).area == 0:  # outside the raster: empty (NaN) rows, by design
        assert df["treecover_ha"].isna().all() and df["loss_ha"].isna().all()
        return
    ref = brute_force(tc, ly, west, north, geom, 30, min_size, years, sphere=sphere)
    np.testing.assert_allclose(df["treecover_ha"], [r[0] for r in ref], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(df["loss_ha"], [r[1] for r in ref], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------ hand-computed cases
def test_hand_computed_small_case(tmp_path):
    """3 x 4 pixels, polygon = the left half of column 1 plus columns 2-3 of rows 0-1; two patches."""
    tc = np.array([[50, 40, 0, 90],
                   [10, 35, 0, 90],
                   [80, 0, 0, 0]], "u1")
    ly = np.array([[0, 3, 0, 1],
                   [0, 0, 0, 3],
                   [2, 0, 0, 0]], "u1")
    west, north = 20.0, 10.0
    tcp = write_tif(tmp_path / "tc.tif", tc, west=west, north=north)
    lyp = write_tif(tmp_path / "ly.tif", ly, west=west, north=north)
    # covers x in [west + 0.5 px, west + 4 px], y in rows 0-1 exactly
    geom = shapely.box(west + 0.5 * RES, north - 2 * RES, west + 4 * RES, north)
    # pixel areas as the engine computes them (checked against the closed form in
    # test_pixel_areas_ellipsoid_and_sphere), so the strict min-size tie below is exact
    a = pixel_row_areas(from_origin(west, north, RES, RES), rasterio.crs.CRS.from_epsg(4326), 0, 3)
    df = forest_area_by_year(tcp, lyp, regions=gpd.GeoDataFrame({"region": ["p"]}, geometry=[geom], crs="EPSG:4326"),
                             years=[2000, 2001, 2002, 2003])
    # forest (>= 30) inside the touched mask (rows 0-1, cols 0-3; row 2 only touched along its top edge, f = 0):
    # (0,0) f=0.5, (0,1), (1,1), (0,3), (1,3) f=1; (2,0) is forest and touched but has f = 0
    total = (0.5 * a[0] + a[0] + a[1] + a[0] + a[1]) / 1e4
    loss1 = a[0] / 1e4          # (0,3) lost 2001
    loss3 = (a[0] + a[1]) / 1e4  # (0,1) and (1,3) lost 2003
    assert df["treecover_ha"].tolist() == pytest.approx([total, total - loss1, total - loss1, total - loss1 - loss3],
                                                        rel=1e-9)
    assert df["loss_ha"].tolist() == pytest.approx([0.0, loss1, 0.0, loss3], rel=1e-9, abs=1e-12)
    # min_size: patch {(0,0),(0,1),(1,1)} has 1.5 a0 + a1; patch {(0,3),(1,3)} has a0 + a1 -> drop the smaller
    thr = (a[0] + a[1]) / 1e4
    df2 = forest_area_by_year(tcp, lyp, regions=gpd.GeoDataFrame({"region": ["p"]}, geometry=[geom], crs="EPSG:4326"),
                              years=2000, min_size_ha=thr)
    assert df2["treecover_ha"].iloc[0] == pytest.approx((1.5 * a[0] + a[1]) / 1e4, rel=1e-9)
    # "strictly greater": a threshold equal to the larger patch's area drops it too
    df3 = forest_area_by_year(tcp, lyp, regions=gpd.GeoDataFrame({"region": ["p"]}, geometry=[geom], crs="EPSG:4326"),
                              years=2000, min_size_ha=(1.5 * a[0] + a[1]) / 1e4 * (1 + 1e-12))
    assert df3["treecover_ha"].iloc[0] == 0.0


def test_patches_do_not_join_outside_the_polygon(tmp_path):
    """Two forest blocks joined only by a corridor outside the polygon are two patches."""
    tc = np.zeros((5, 7), "u1")
    tc[1:4, 0:2] = 100
    tc[1:4, 5:7] = 100
    tc[0, :] = 100  # the corridor, in row 0
    tcp = write_tif(tmp_path / "tc.tif", tc, west=0.0, north=1.0)
    inside = shapely.box(0.0, 1.0 - 5 * RES, 7 * RES, 1.0 - 1 * RES)  # rows 1-4 only
    a = band_area(1.0 - RES * np.arange(5), RES)
    left = (a[1] + a[2] + a[3]) * 2 / 1e4
    gdf = gpd.GeoDataFrame({"region": ["p"]}, geometry=[inside], crs="EPSG:4326")
    df = forest_area_by_year(tcp, regions=gdf, min_size_ha=left * 1.01)  # each block alone is too small
    assert df["treecover_ha"].iloc[0] == 0.0
    df = forest_area_by_year(tcp, min_size_ha=left * 1.01)  # without the polygon the corridor joins them
    assert df["treecover_ha"].iloc[0] > 2 * left


def test_pixel_areas_ellipsoid_and_sphere():
    t = from_origin(-72.0, 18.7, RES, RES)
    crs = rasterio.crs.CRS.from_epsg(4326)
    ell = pixel_row_areas(t, crs, 0, 200)
    np.testing.assert_allclose(ell, band_area(18.7 - RES * np.arange(200), RES), rtol=1e-8)
    sph = pixel_row_areas(t, crs, 0, 200, "sphere")
    # a 0.00025 degree pixel at 18.7 N on the sphere: R² Δλ Δφ cos φ, to first order
    assert sph[0] == pytest.approx(6378137.0**2 * math.radians(RES) ** 2 * math.cos(math.radians(18.7 - RES / 2)),
                                   rel=1e-6)
    # the documented difference: about half a percent at 18 N
    assert sph[0] / ell[0] - 1 == pytest.approx(0.0055, abs=0.0005)
    with pytest.raises(ConfigError, match="cell_area"):
        pixel_row_areas(t, crs, 0, 1, "flat")


def test_parse_years():
    assert parse_years("2000-2003") == [2000, 2001, 2002, 2003]
    assert parse_years("2005, 2001") == [2001, 2005]
    assert parse_years(2010) == [2010]
    for bad in ("1999-2001", "2003-2001", "twenty"):
        with pytest.raises(ConfigError, match="years"):
            parse_years(bad)


# ------------------------------------------------------------------------------ real Hansen crops
@pytest.fixture
def hansen():
    return shared_file(HANSEN_TC), shared_file(HANSEN_LY), shared_file(GFW_EM), shared_file(AOI)


@pytest.mark.realdata
def test_real_crop_fractions_match_exactextract(hansen):
    """Our covered fractions equal exactextract's on the real AOI and Hansen grid."""
    exactextract = pytest.importorskip("exactextract")
    from eo_pipeline.regions import coverage_fractions

    tc, _, _, aoi = hansen
    with rasterio.open(tc) as r:
        transform, shape = r.transform, r.shape
    geom = gpd.read_file(aoi).geometry.iloc[0]
    frac, touched = coverage_fractions(geom, transform, shape)
    df = exactextract.exact_extract(str(tc), gpd.read_file(aoi)[["geometry"]], ["cell_id", "coverage"],
                                    output="pandas")
    ids, cov = np.asarray(df["cell_id"].iloc[0]), np.asarray(df["coverage"].iloc[0])
    theirs = np.zeros(shape)
    theirs.ravel()[ids] = cov
    np.testing.assert_allclose(frac, theirs, atol=1e-6)
    assert touched[frac > 0].all()
    assert ((frac > 0) & (frac < 1)).sum() > 100  # a real boundary


@pytest.mark.realdata
def test_real_crop_area_by_year(hansen):
    tc, ly, _, aoi = hansen
    df = forest_area_by_year(tc, ly, regions=aoi, years="2000-2023")
    assert list(df.columns) == ["region", "year", "treecover_ha", "loss_ha"]
    assert len(df) == 24 and df["year"].tolist() == list(range(2000, 2024))
    # bookkeeping: tree cover falls by exactly each year's loss
    np.testing.assert_allclose(-np.diff(df["treecover_ha"]), df["loss_ha"].iloc[1:], rtol=1e-9, atol=1e-9)
    # the AOI is about 22.7 km² (sum of covered fractions x pixel areas) and mostly forested
    assert df.attrs["region_area_ha"]["region_0"] == pytest.approx(2271.9, rel=1e-3)
    assert 1800 < df["treecover_ha"].iloc[0] < 2271.9
    # brute force on the real data, all pixels by shapely
    with rasterio.open(tc) as r, rasterio.open(ly) as r2:
        t, c, l_ = r.transform, r.read(1), r2.read(1)
    geom = gpd.read_file(aoi).geometry.iloc[0]
    ref = brute_force(c, l_, t.c, t.f, geom, 30, 0.0, [2000, 2003, 2023], res=t.a)
    sel = df.set_index("year").loc[[2000, 2003, 2023]]
    np.testing.assert_allclose(sel["treecover_ha"], [r[0] for r in ref], rtol=1e-9)
    np.testing.assert_allclose(sel["loss_ha"], [r[1] for r in ref], rtol=1e-9)
    # the sphere gives ~0.54 % more at 18.66 N
    sph = forest_area_by_year(tc, ly, regions=aoi, years=2000, cell_area="sphere")
    assert sph["treecover_ha"].iloc[0] / df["treecover_ha"].iloc[0] - 1 == pytest.approx(0.0054, abs=0.0003)


@pytest.mark.realdata
def test_real_crop_min_size_and_cover(hansen):
    tc, ly, _, aoi = hansen
    base = forest_area_by_year(tc, ly, regions=aoi, years=2000)["treecover_ha"].iloc[0]
    big = forest_area_by_year(tc, ly, regions=aoi, years=2000, min_size_ha=10)["treecover_ha"].iloc[0]
    mu = forest_area_by_year(tc, ly, regions=aoi, years=2000, min_size_ha="150 mu")["treecover_ha"].iloc[0]
    dense = forest_area_by_year(tc, ly, regions=aoi, years=2000, min_cover=75)["treecover_ha"].iloc[0]
    assert big < base and dense < base
    assert mu == pytest.approx(big, rel=1e-12)  # 150 mu = 10 ha


@pytest.mark.realdata
def test_real_crop_gfw_emissions(hansen):
    tc, ly, em, aoi = hansen
    frac = compute_forest(tc, ly, emissions=em, regions=aoi)
    whole = compute_forest(tc, ly, emissions=em, regions=aoi, emissions_weighting="none")
    ys = list(range(2000, 2024))
    e_frac = frac.regions[0].by_year(ys, "emissions_mg")[0]
    e_whole = whole.regions[0].by_year(ys, "emissions_mg")[0]
    assert e_frac[0] == 0 and e_whole[0] == 0
    assert (e_whole >= e_frac - 1e-9).all() and e_whole.sum() > e_frac.sum()
    # brute force: emissions of counted forest pixels lost in 2003, weighted by covered fraction / whole
    with rasterio.open(tc) as r, rasterio.open(ly) as r2, rasterio.open(em) as r3:
        t, c, l_, e = r.transform, r.read(1), r2.read(1), r3.read(1).astype(np.float64)
    geom = gpd.read_file(aoi).geometry.iloc[0]
    from eo_pipeline.regions import coverage_fractions

    f, touched = coverage_fractions(geom, t, c.shape)
    sel = (c >= 30) & touched & (l_ == 3) & np.isfinite(e)
    assert e_frac[3] == pytest.approx(float((e * f)[sel].sum()), rel=1e-9)
    assert e_whole[3] == pytest.approx(float(e[sel & (f > 0)].sum()), rel=1e-9)
    # everything lost is within the layer's own total
    assert e_whole.sum() <= np.nansum(e) + 1e-6


@pytest.mark.realdata
def test_tiles_mosaic_equals_single_file(hansen, tmp_path):
    """The crop cut into 4 tiles and mosaicked gives the same table."""
    tc, ly, _, aoi = hansen
    paths = {"tc": [], "ly": []}
    for key, src in (("tc", tc), ("ly", ly)):
        with rasterio.open(src) as r:
            data, t = r.read(1), r.transform
        h, w = data.shape
        for i, (r0, r1) in enumerate(((0, h // 2), (h // 2, h))):
            for j, (c0, c1) in enumerate(((0, w // 3), (w // 3, w))):
                p = write_tif(tmp_path / f"{key}_{i}{j}.tif", data[r0:r1, c0:c1], west=t.c + c0 * t.a,
                              north=t.f + r0 * t.e, res=t.a)
                paths[key].append(p)
    one = forest_area_by_year(tc, ly, regions=aoi, min_size_ha=5)
    many = forest_area_by_year(paths["tc"], paths["ly"], regions=aoi, min_size_ha=5)
    np.testing.assert_allclose(many["treecover_ha"], one["treecover_ha"], rtol=1e-9)
    np.testing.assert_allclose(many["loss_ha"], one["loss_ha"], rtol=1e-9, atol=1e-12)


@pytest.mark.realdata
def test_only_the_aoi_window_is_read(hansen, tmp_path, monkeypatch):
    """A small AOI in a bigger raster reads only the rows/columns around it."""
    tc, ly, _, _ = hansen
    with rasterio.open(tc) as r:
        t = r.transform
    aoi = shapely.box(t.c + 20 * t.a, t.f + 60 * t.e, t.c + 50 * t.a, t.f + 30 * t.e)  # cols 20-50, rows 30-60
    seen = []
    orig = Mosaic.read_masked

    def spy(self, r0, r1, c0, c1, fill=0):
        seen.append((r0, r1, c0, c1))
        return orig(self, r0, r1, c0, c1, fill)

    monkeypatch.setattr(Mosaic, "read_masked", spy)
    forest_area_by_year(tc, ly, regions=gpd.GeoDataFrame({"region": ["a"]}, geometry=[aoi], crs="EPSG:4326"))
    assert seen and all(29 <= r0 and r1 <= 61 and 19 <= c0 and c1 <= 51 for r0, r1, c0, c1 in seen)


@pytest.mark.realdata
def test_landcover_class_rasters():
    lc = shared_file("forest/W080N20_LC100_v3.0.1_2019.mapme-crop.tif")
    aoi = shared_file(AOI)
    df = forest_area_by_year(lc, regions=aoi, landcover="lc100")
    assert df["year"].tolist() == [2019] and np.isnan(df["loss_ha"].iloc[0])
    with rasterio.open(lc) as r:
        t, c = r.transform, r.read(1)
    geom = gpd.read_file(aoi).geometry.iloc[0]
    from eo_pipeline.regions import coverage_fractions

    f, _ = coverage_fractions(geom, t, c.shape)
    a = band_area(t.f + t.e * np.arange(c.shape[0]), t.a)[:, None]
    forest = np.isin(c, [111, 112, 113, 114, 115, 116, 121, 122, 123, 124, 125, 126])
    assert df["treecover_ha"].iloc[0] == pytest.approx(float((f * a)[forest].sum() / 1e4), rel=1e-6)
    # WorldCover near the antimeridian at 66-69 N: whole tile, classes 10 and 95
    wc = shared_file("forest/ESA_WorldCover_10m_2020_v100_N66E177_Map.overview1024.tif")
    df = forest_area_by_year(wc, landcover="worldcover")
    with rasterio.open(wc) as r:
        t, c = r.transform, r.read(1)
    a = band_area(t.f + t.e * np.arange(c.shape[0]), t.a)[:, None]
    assert df["year"].tolist() == [2020]
    assert df["treecover_ha"].iloc[0] == pytest.approx(float(np.broadcast_to(a, c.shape)[np.isin(c, [10, 95])].sum() / 1e4),
                                                       rel=1e-6)


# ------------------------------------------------------------------------------ per-cell maps
def test_cell_sums_conserve_the_region_total():
    tc = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_treecover2000_*.tif"))
    ly = next(SAMPLES.glob("Hansen_GFC-2023-v1.11_lossyear_*.tif"))
    regions = gpd.read_file(SAMPLES / "regions_north_china.geojson")
    regions = regions[regions["id"] == "yuyang_forest_aoi"].assign(region="aoi")
    grid = GridSpec.from_bbox([109.55, 38.2, 109.9, 38.5], 0.01)
    res = compute_forest(tc, ly, regions=regions, grid=grid)
    ys = [2000, 2010, 2023]
    region_tc = res.regions[0].treecover_m2(ys)[0]
    cells_tc = res.cells.treecover_m2(ys).sum(axis=0)
    np.testing.assert_allclose(cells_tc, region_tc, rtol=1e-9)
    cells = res.cell_table(ys)
    assert set(cells.columns) >= {"cell_row", "cell_col", "x", "y", "year", "treecover_ha", "loss_ha", "mapped_ha"}
    np.testing.assert_allclose(cells.groupby("year")["treecover_ha"].sum().to_numpy(), region_tc / 1e4, rtol=1e-9)
    one = cells[(cells.year == 2000)].iloc[0]
    assert grid.x[int(one.cell_col)] == one.x and one.treecover_ha <= one.mapped_ha + 1e-9
    from eo_pipeline.sinks import carbon_maps

    maps = carbon_maps(res, 2023)
    ff = maps["forest_fraction"].values
    assert np.nanmin(ff) >= 0 and np.nanmax(ff) <= 1 + 1e-6
    assert float(maps["treecover_ha"].sum()) == pytest.approx(region_tc[-1] / 1e4, rel=1e-5)
    # a projected (equal-area) map grid conserves the total too
    albers = GridSpec.from_bbox([390_000, 4_105_000, 422_000, 4_140_000], 1000,
                                "+proj=aea +lat_1=25 +lat_2=47 +lon_0=105 +ellps=WGS84 +units=m")
    res2 = compute_forest(tc, ly, regions=regions, grid=albers)
    assert res2.cells.treecover_m2([2000]).sum() == pytest.approx(res.regions[0].treecover_m2([2000])[0, 0], rel=1e-9)


# ------------------------------------------------------------------------------ bad input
def _pair(tmp_path, tc=None, ly=None, **kw):
    tc = np.full((20, 30), 50, "u1") if tc is None else tc
    ly = np.zeros(tc.shape, "u1") if ly is None else ly
    return (write_tif(tmp_path / "tc.tif", tc, west=100.0, north=40.0, nodata=kw.get("nodata")),
            write_tif(tmp_path / "ly.tif", ly, west=100.0, north=40.0))


def test_rasters_in_different_crs_or_resolution_are_refused(tmp_path):
    tc, _ = _pair(tmp_path)
    ly_merc = write_tif(tmp_path / "ly_merc.tif", np.zeros((20, 30), "u1"), west=1.1e7, north=4.8e6, res=30.0,
                        crs="EPSG:3857")
    with pytest.raises(ConfigError, match="EPSG:3857.*treecover.*never resamples"):
        forest_area_by_year(tc, ly_merc)
    ly_coarse = write_tif(tmp_path / "ly_coarse.tif", np.zeros((5, 8), "u1"), west=100.0, north=40.0, res=0.001)
    with pytest.raises(ConfigError, match="0.001.*pixels but treecover has 0.00025"):
        forest_area_by_year(tc, ly_coarse)
    ly_shift = write_tif(tmp_path / "ly_shift.tif", np.zeros((20, 30), "u1"), west=100.0 + RES / 3, north=40.0)
    with pytest.raises(ConfigError, match="not aligned"):
        forest_area_by_year(tc, ly_shift)
    tile2 = write_tif(tmp_path / "tc2.tif", np.zeros((20, 30), "u1"), west=1.1e7, north=4.8e6, res=30.0,
                      crs="EPSG:3857")
    with pytest.raises(ConfigError, match="different CRSs"):
        forest_area_by_year([tc, tile2])


def test_regions_in_another_crs_are_reprojected(tmp_path):
    tc, ly = _pair(tmp_path)
    box = shapely.box(100.0 + 5 * RES, 40.0 - 15 * RES, 100.0 + 25 * RES, 40.0 - 5 * RES)
    g4326 = gpd.GeoDataFrame({"region": ["b"]}, geometry=[box], crs="EPSG:4326")
    a = forest_area_by_year(tc, ly, regions=g4326)["treecover_ha"].iloc[0]
    b = forest_area_by_year(tc, ly, regions=g4326.to_crs("EPSG:32647"))["treecover_ha"].iloc[0]
    assert b == pytest.approx(a, rel=1e-3)  # the UTM polygon's straight edges differ by a hair


def test_polygon_outside_the_tiles(tmp_path):
    tc, ly = _pair(tmp_path)
    inside = shapely.box(100.0 + RES, 40.0 - 10 * RES, 100.0 + 10 * RES, 40.0 - RES)
    far = shapely.box(10.0, 10.0, 10.1, 10.1)
    half = shapely.box(100.0 - 10 * RES, 40.0 - 10 * RES, 100.0 + 10 * RES, 40.0 - RES)
    gdf = gpd.GeoDataFrame({"region": ["in", "far", "half"]}, geometry=[inside, far, half], crs="EPSG:4326")
    with pytest.warns(QualityWarning) as rec:
        df = forest_area_by_year(tc, ly, regions=gdf, years="2000-2001")
    msgs = " | ".join(str(w.message) for w in rec)
    assert "region 'far' lies outside the treecover rasters" in msgs
    assert "50.0% of region 'half' lies outside" in msgs
    far_rows = df[df.region == "far"]
    assert far_rows["treecover_ha"].isna().all() and far_rows["loss_ha"].isna().all()
    assert df[df.region == "in"]["treecover_ha"].notna().all()
    assert df.attrs["region_notes"]["far"] == "outside the rasters"


def test_canopy_above_100_and_nodata(tmp_path):
    bad = np.full((20, 30), 50, "u1")
    bad[3, 4] = 180
    tc, ly = _pair(tmp_path, tc=bad)
    with pytest.raises(RasterValueError, match=r"tc.tif: 1 pixels have canopy cover above 100 % \(max 180\)"):
        forest_area_by_year(tc, ly)
    assert issubclass(RasterValueError, EOPipelineError)
    # the same value declared as nodata: non-forest, with a warning
    tc2, ly2 = _pair(tmp_path, tc=bad, nodata=180)
    with pytest.warns(QualityWarning, match="1 treecover pixels .* no data"):
        df = forest_area_by_year(tc2, ly2)
    a = band_area(40.0 - RES * np.arange(20), RES)
    assert df["treecover_ha"].iloc[0] == pytest.approx((a.sum() * 30 - a[3]) / 1e4, rel=1e-9)


def test_lossyear_out_of_range_and_years_without_loss(tmp_path):
    ly = np.zeros((20, 30), "u1")
    ly[0, 0] = 200
    tc, lyp = _pair(tmp_path, ly=ly)
    with pytest.raises(RasterValueError, match="lossyear values up to 200"):
        forest_area_by_year(tc, lyp)
    with pytest.raises(ConfigError, match="needs the lossyear layer"):
        forest_area_by_year(tc, years="2000-2005")
    assert forest_area_by_year(tc)["year"].tolist() == [2000]
    with pytest.raises(ConfigError, match="min_cover"):
        forest_area_by_year(tc, min_cover=130)
    with pytest.raises(ConfigError, match="min_size"):
        forest_area_by_year(tc, min_size_ha="lots")
    with pytest.raises(ConfigError, match="landcover"):
        forest_area_by_year(tc, landcover="corine")


def test_fractions_where_gdal_misses_a_cell_the_boundary_crosses():
    """Found by the property test above in CI: one 1-row strip of a star polygon near the equator.

    GDAL's all-touched rasterization of the boundary missed the cell (row 6, column 6) the
    boundary crosses near a corner, so it was taken as wholly inside (1.0 instead of
    0.9991). Every cell must equal shapely's exact overlay, in the whole window and strip
    by strip, and the property test's case must match its brute-force reference.
    """
    from affine import Affine

    from eo_pipeline.regions import coverage_fractions

    geom = shapely.from_wkt(
        "POLYGON ((10.001751670384273 -0.0009047229025233, 10.002023160734256 0.0001733702784339, "
        "10.000325408659123 -0.0004127908192757, 10.000206845871 -0.0003959887194301, "
        "9.99959326496 -0.0008379060932665, 10.000564322623887 -0.0012297931314259, "
        "10.000783750300679 -0.0014754340408459, 10.001878221046699 -0.0023000994254441, "
        "10.001748935969557 -0.0019573063341868, 10.001751670384273 -0.0009047229025233))")
    west, north, rows, cols = 10.0, 0.0, 8, 8
    exact = np.array([[shapely.intersection(shapely.box(west + c * RES, north - (r + 1) * RES, west + (c + 1) * RES,
                                                        north - r * RES), geom).area / RES**2
                       for c in range(cols)] for r in range(rows)])
    whole, _ = coverage_fractions(geom, Affine(RES, 0, west, 0, -RES, north), (rows, cols))
    np.testing.assert_allclose(whole, exact, atol=1e-12)
    for r in range(rows):
        strip = shapely.clip_by_rect(geom, west - RES, north - (r + 2) * RES, west + (cols + 1) * RES,
                                     north - (r - 1) * RES)
        f, _ = coverage_fractions(strip, Affine(RES, 0, west, 0, -RES, north - r * RES), (1, cols))
        np.testing.assert_allclose(f[0], exact[r], atol=1e-12, err_msg=f"row {r}")
