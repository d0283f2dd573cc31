# SPDX-License-Identifier: Apache-2.0
"""Hyperspectral methane plumes: readers, the CH4 signature, the matched filter, plumes, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from eo_pipeline.absorption import load_absorption_table, unit_absorption
from eo_pipeline.errors import (
    ConfigError,
    InputFileNotFoundError,
    ProductLayoutError,
    ReaderOptionError,
    TruncatedFileError,
)
from eo_pipeline.matched_filter import apply_filter, ch4_matched_filter, filter_coefficients, partial_moments
from eo_pipeline.plumes import find_plumes, mass_per_ppm_m, pixel_area_m2
from eo_pipeline.readers.radiance import open_radiance
from eo_pipeline.samples.hyperspectral import (
    gaussian_plume_ppm_m,
    plant_plume,
    prisma_bands,
    write_emit_l1b,
    write_prisma_l1,
)

from .conftest import raise_if_dask_computes, shared_file

AVIRIS = "hyperspectral/ang20160910t185702_2rdn_img"
CLI = [sys.executable, "-m", "eo_pipeline.cli"]


# ------------------------------------------------------------------ ENVI reader
def _write_envi(folder: Path, name: str, cube: np.ndarray, interleave: str, *, big: bool = False, offset: int = 0,
                extra: str = "") -> Path:
    """Hand-written ENVI file (cube is lines, samples, bands)."""
    order = {"bsq": (2, 0, 1), "bil": (0, 2, 1), "bip": (0, 1, 2)}[interleave]
    data = np.ascontiguousarray(cube.transpose(order)).astype(">f4" if big else "<f4")
    path = folder / name
    path.write_bytes(b"\0" * offset + data.tobytes())
    lines, samples, bands = cube.shape
    (folder / (name + ".hdr")).write_text(
        f"ENVI\ndescription = {{test}}\nsamples = {samples}\nlines   = {lines}\nbands   = {bands}\n"
        f"header offset = {offset}\nfile type = ENVI Standard\ndata type = 4\ninterleave = {interleave}\n"
        f"byte order = {1 if big else 0}\n{extra}")
    return path


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
@pytest.mark.parametrize("big", [False, True])
def test_envi_follows_interleave_byte_order_and_offset(tmp_path, interleave, big):
    rng = np.random.default_rng(1)
    cube = rng.random((7, 5, 4)).astype(np.float32)
    cube[2, 3, :] = -9999
    waves = "wavelength units = Micrometers\nwavelength = {2.1, 2.2, 2.3, 2.4}\nfwhm = {0.006, 0.006, 0.006, 0.006}\n"
    path = _write_envi(tmp_path, f"x_{interleave}_rdn", cube, interleave, big=big, offset=128,
                       extra=waves + "data ignore value = -9999\n")
    ds = open_radiance(path, chunk_lines=3)
    assert ds.radiance.dims == ("line", "sample", "band") and ds.radiance.shape == (7, 5, 4)
    assert ds.radiance.data.chunks[0] == (3, 3, 1)
    got = ds.radiance.values
    want = np.where(cube == -9999, np.nan, cube)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(ds.wavelength.values, [2100, 2200, 2300, 2400])
    np.testing.assert_allclose(ds.fwhm.values, 6.0)
    assert ds.fwhm.attrs["source"] == "header 'fwhm' key"


def test_envi_errors_name_the_file(tmp_path):
    cube = np.ones((4, 3, 2), np.float32)
    path = _write_envi(tmp_path, "y_rdn", cube, "bil", extra="band names = {2100.0 Nanometers, 2110.5 Nanometers}\n")
    with pytest.raises(ReaderOptionError, match="fwhm"):  # no fwhm, unknown instrument
        open_radiance(path)
    ds = open_radiance(path, fwhm_nm=7.0)
    np.testing.assert_allclose(ds.wavelength.values, [2100.0, 2110.5])
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(TruncatedFileError, match="y_rdn"):
        open_radiance(path, fwhm_nm=7.0)
    with pytest.raises(InputFileNotFoundError):
        open_radiance(tmp_path / "missing_rdn")
    (tmp_path / "z_rdn").write_bytes(b"\0" * 96)
    (tmp_path / "z_rdn.hdr").write_text("ENVI\nsamples = 3\nlines = 4\nbands = 2\ndata type = 4\ninterleave = bil\n")
    with pytest.raises(ProductLayoutError, match="z_rdn.hdr.*wavelength"):
        open_radiance(tmp_path / "z_rdn")


@pytest.mark.realdata
def test_real_aviris_ng_cube():
    path = shared_file(AVIRIS)
    with raise_if_dask_computes():
        ds = open_radiance(path)
    assert ds.radiance.shape == (25, 30, 425)
    assert ds.attrs["instrument"] == "AVIRIS-NG" and ds.attrs["interleave"] == "bsq"
    assert ds.wavelength.values[0] == pytest.approx(376.44) and ds.wavelength.values[-1] == pytest.approx(2500.12)
    np.testing.assert_allclose(ds.fwhm.values, 5.95)  # documented AVIRIS-NG default: the header has no fwhm
    # map info: UL corner of pixel (1, 1) at (353128.75, 3813729.77), 15 m pixels, UTM 11N
    assert ds.x.values[0] == pytest.approx(353128.751647949 + 7.5)
    assert ds.y.values[0] == pytest.approx(3813729.76806641 - 7.5)
    from pyproj import CRS

    assert CRS.from_wkt(ds.spatial_ref.attrs["crs_wkt"]).to_epsg() in (32611, None)
    assert "obs_ortdem" in ds.attrs["obs_file"]
    rad = ds.radiance.values
    assert np.isfinite(rad).all() and 0 < np.median(rad) < 20  # uW cm-2 sr-1 nm-1


# ------------------------------------------------------------------ CH4 signature
def test_unit_absorption_matches_mag1c_definition():
    """Brute force after mag1c's generate_template_from_bands (full-range responses), / 1e5."""
    wave, spectra = load_absorption_table()
    centres = np.array([2150.0, 2250.0, 2300.5, 2350.0, 2400.0])
    fwhm = np.array([6.0, 6.0, 8.5, 6.0, 10.0])
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    resp = np.exp(-((wave[:, None] - centres[None]) ** 2) / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)
    resp /= resp.sum(axis=0)
    lograd = np.log(spectra @ resp)
    conc = np.array([0, 500, 1000, 2000, 4000, 8000, 16000.0])
    slope = np.linalg.lstsq(np.stack([np.ones_like(conc), conc]).T, lograd, rcond=None)[0][1]
    np.testing.assert_allclose(unit_absorption(centres, fwhm), slope, rtol=1e-6)
    assert (slope < 0).all()
    assert unit_absorption(np.array([600.0]), np.array([6.0]))[0] == 0.0  # outside the table


def test_absorption_table_source_is_the_mag1c_wheel():
    from eo_pipeline.absorption import MAG1C_SHA256, _sha256, absorption_table_path

    path = absorption_table_path()
    if path.suffix == ".whl":
        assert _sha256(path) == MAG1C_SHA256
        assert "mag1c/ch4.lut" in zipfile.ZipFile(path).namelist()
    wave, spectra = load_absorption_table()
    assert spectra.shape == (7, 31800) and wave[0] == pytest.approx(1399.58997)


# ------------------------------------------------------------------ matched filter kernels
def _linear_scene(rng, lines=400, samples=6, p=8):
    mu = rng.uniform(1.0, 2.0, p)
    a = rng.standard_normal((p, p)) * 0.05
    cov = a @ a.T + np.diag(np.full(p, 1e-3))
    x = rng.multivariate_normal(mu, cov, size=(lines, samples)).astype(np.float32)
    return x, mu, cov


def test_filter_is_exact_on_a_linear_model():
    """x = background + alpha (mu * k): the filter returns alpha exactly (no shrinkage)."""
    rng = np.random.default_rng(3)
    x, mu, cov = _linear_scene(rng)
    k = -np.linspace(1e-6, 1e-5, x.shape[-1])
    use = np.ones(x.shape[:2], bool)
    coef = filter_coefficients(partial_moments(x, use, False), k, 0.0)
    base = apply_filter(x, np.zeros(x.shape[:2], np.uint8), coef)
    alpha = np.zeros(x.shape[:2])
    alpha[10:20, 2] = 2500.0
    mu_hat = coef[0, : k.size]
    x2 = (x + alpha[..., None] * (mu_hat * k)[None, None, :]).astype(np.float64)
    res = apply_filter(x2, np.zeros(x.shape[:2], np.uint8), coef)
    np.testing.assert_allclose(res[..., 0] - base[..., 0], alpha, atol=1e-2 * 2500)
    # the noise is the standard deviation of the output over the background pixels
    assert base[..., 1].flat[0] == pytest.approx(np.std(base[..., 0]), rel=0.01)
    assert abs(np.mean(base[..., 0])) < 0.01 * np.std(base[..., 0])


def test_column_statistics_and_dask_blocks_agree_with_numpy():
    import xarray as xr

    rng = np.random.default_rng(5)
    x, mu, cov = _linear_scene(rng, lines=300, samples=5, p=6)
    wave = np.linspace(2120, 2420, 6)
    cube = xr.Dataset({"radiance": (("line", "sample", "band"), x)},
                      coords={"wavelength": ("band", wave), "fwhm": ("band", np.full(6, 8.0))})
    k = unit_absorption(wave, np.full(6, 8.0))
    for background, groups in (("column", 5), ("scene", 1)):
        one = ch4_matched_filter(cube.chunk({"line": 300}), passes=1, background=background, saturation=None,
                                 flare_hfdi=None).compute()
        many = ch4_matched_filter(cube.chunk({"line": 37}), passes=1, background=background, saturation=None,
                                  flare_hfdi=None).compute()
        np.testing.assert_allclose(many.ch4_enhancement.values, one.ch4_enhancement.values, rtol=1e-4, atol=1e-2)
        # brute force: the formula with numpy over the whole array
        xd = x.astype(np.float64)
        want = np.empty(x.shape[:2])
        cols = [[c] for c in range(5)] if groups == 5 else [list(range(5))]
        for cs in cols:
            flat = xd[:, cs].reshape(-1, 6)
            m = flat.mean(axis=0)
            c = np.cov(flat, rowvar=False)
            c = (1 - 1e-4) * c + 1e-4 * np.diag(np.diag(c))
            t = m * k
            ci = np.linalg.solve(c, t)
            want[:, cs] = ((xd[:, cs] - m) @ ci) / (t @ ci)
        np.testing.assert_allclose(one.ch4_enhancement.values, want, rtol=1e-3, atol=1e-1)
        assert one.attrs["matched_filter_background"] == background


def test_matched_filter_is_lazy_and_masks_saturated_pixels(tmp_path):
    path = write_emit_l1b(tmp_path, lines=40, samples=30)
    cube = open_radiance(path)
    rad = cube.radiance.values.copy()
    rad[5, 5, 250] = 50.0  # saturated SWIR band
    rad[6, 6, :] = np.nan
    cube["radiance"] = (cube.radiance.dims, rad)
    cube["radiance"] = cube.radiance.chunk({"line": 16})
    with raise_if_dask_computes():
        res = ch4_matched_filter(cube)
    res = res.compute()
    assert res.pixel_mask.values[5, 5] == 2 and res.pixel_mask.values[6, 6] == 1
    assert np.isnan(res.ch4_enhancement.values[5, 5]) and np.isnan(res.ch4_enhancement.values[6, 6])
    assert res.ch4_enhancement.attrs["units"] == "ppm m"
    assert np.isfinite(res.ch4_enhancement.values).sum() == 40 * 30 - 2


# ------------------------------------------------------------------ EMIT reader
def test_emit_reader_layout(tmp_path):
    path = write_emit_l1b(tmp_path, lines=50, samples=40)
    assert path.name.startswith("EMIT_L1B_RAD_001_20230814T193021_")
    with raise_if_dask_computes():
        ds = open_radiance(path)
    assert ds.attrs["reader"] == "emit_l1b_rad" and ds.attrs["instrument"] == "EMIT"
    assert ds.radiance.shape == (50, 40, 285) and ds.radiance.attrs["units"] == "uW cm-2 sr-1 nm-1"
    assert ds.wavelength.values[0] == pytest.approx(381.0) and ds.fwhm.values[0] == pytest.approx(8.5)
    gs, gl = ds.glt_sample.values, ds.glt_line.values
    ok = gs >= 0
    assert ok.any() and (~ok).any() and gs.max() == 39 and gl.max() == 49 and gl[ok].min() == 0
    # every sensor pixel's centre lies in (or next to) the ortho cell that points to it
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        gt = nc.geotransform
        assert nc.synthetic == "true"
    lon, lat = ds.lon.values, ds.lat.values
    r, c = np.nonzero(ok)
    cx, cy = gt[0] + (c + 0.5) * gt[1], gt[3] + (r + 0.5) * gt[5]
    assert np.max(np.abs(lon[gl[ok], gs[ok]] - cx)) < 1.0 * gt[1]
    assert np.max(np.abs(lat[gl[ok], gs[ok]] - cy)) < 1.0 * abs(gt[5])


def test_emit_wrong_units_is_one_line(tmp_path):
    import netCDF4

    path = write_emit_l1b(tmp_path, lines=20, samples=10, compress=False)
    with netCDF4.Dataset(path, "a") as nc:
        nc["radiance"].units = "W/m2/sr/um"
    with pytest.raises(ProductLayoutError, match=path.name + ".*units"):
        open_radiance(path)


# ------------------------------------------------------------------ PRISMA reader
def test_prisma_reader_layout_and_radiance_scaling(tmp_path):
    import h5py

    path = write_prisma_l1(tmp_path, lines=30, samples=20)
    assert path.name.startswith("PRS_L1_STD_OFFL_20230407100729_")
    with raise_if_dask_computes():
        ds = open_radiance(path, chunk_lines=8)
    assert ds.attrs["reader"] == "prisma_l1" and ds.attrs["instrument"] == "PRISMA"
    assert ds.attrs["time"] == "2023-04-07T10:07:29Z"
    bands = prisma_bands()
    n_good = sum(int((w > 0).sum()) for w, _ in bands.values())
    assert ds.radiance.shape == (30, 20, n_good)  # bands without data (flag 0) are left out
    assert np.all(np.diff(ds.wavelength.values) >= 0) and ds.wavelength.values[0] > 0  # ascending
    # hand check of one value: DN / ScaleFactor - Offset (W m-2 sr-1 um-1) x 0.1 -> uW cm-2 sr-1 nm-1
    with h5py.File(path) as h5:
        dn = h5["HDFEOS/SWATHS/PRS_L1_HCO/Data Fields/SWIR_Cube"][7, :, 11]
        cw = h5.attrs["List_Cw_Swir"]
        scale, offset = float(h5.attrs["ScaleFactor_Swir"]), float(h5.attrs["Offset_Swir"])
    b = int(np.argmin(np.abs(np.where(cw > 0, cw, np.inf) - 2300.0)))
    k = int(np.flatnonzero(np.isclose(ds.wavelength.values, cw[b]) & (ds.wavelength.values > 1500))[0])
    assert float(ds.radiance[7, 11, k]) == pytest.approx((dn[b] / scale - offset) * 0.1, rel=1e-6)
    assert ds.lat.shape == (30, 20) and ds.fwhm.attrs["source"].startswith("List_Fwhm")


def test_prisma_planted_plume(tmp_path):
    path = write_prisma_l1(tmp_path, plume={"centre": (60, 50), "peak": 3000.0, "sigma": 3.0})
    res = ch4_matched_filter(open_radiance(path)).compute()
    e = res.ch4_enhancement.values
    enh = gaussian_plume_ppm_m(e.shape, (60, 50))
    sel = enh > 500
    assert np.mean(e[sel]) == pytest.approx(np.mean(enh[sel]), rel=0.2)
    table = find_plumes(res, wind_speed=3.0)
    assert len(table) == 1 and table.sensor.iloc[0] == "PRISMA"
    assert table.ueff_m_s.iloc[0] == pytest.approx(0.43 + 0.32 * 3.0)
    # no lookup table in PRISMA files: the stage builds one from lon/lat and writes lon/lat maps
    import rasterio

    from eo_pipeline.plume_stage import run_plumes

    run = run_plumes(path, tmp_path / "out", wind_speed=3.0)
    with rasterio.open(tmp_path / "out" / "ch4_enhancement.tif") as src:
        assert src.crs.to_epsg() == 4326
        data = src.read(1)
        r, c = np.unravel_index(np.nanargmax(data), data.shape)
        lon, lat = src.xy(r, c)
    lon0, lat0 = 53.95, 39.35  # the planted centre is the scene centre
    assert abs(lon - lon0) < 3 * 30 / 86000 and abs(lat - lat0) < 3 * 30 / 110574
    assert run["plumes"].lon.iloc[0] == pytest.approx(lon0, abs=3e-4)


def test_lookup_table_takes_the_nearest_pixel():
    from eo_pipeline.plume_stage import lookup_table

    lines, samples = np.indices((12, 9), dtype=float)
    ang = np.radians(20.0)
    east, north = samples * np.cos(ang) + lines * np.sin(ang), samples * np.sin(ang) - lines * np.cos(ang)
    lon, lat = 10.0 + east * 30 / 111320.0 / np.cos(np.radians(45.0)), 45.0 + north * 30 / 110574.0
    glt = lookup_table(lon, lat)
    gs, gl = glt["glt_sample"][1], glt["glt_line"][1]
    from affine import Affine

    t = Affine.from_gdal(*(float(v) for v in glt["glt_spatial_ref"][2]["GeoTransform"].split()))
    rows, cols = np.nonzero(gs >= 0)
    cx, cy = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    kx, ky = 111320.0 * np.cos(np.radians(np.median(lat))), 110574.0
    d = np.hypot((lon.ravel()[None] - cx[:, None]) * kx, (lat.ravel()[None] - cy[:, None]) * ky)
    best = d.argmin(axis=1)
    np.testing.assert_array_equal(gl[rows, cols] * 9 + gs[rows, cols], best)  # brute force nearest
    # at the pixels' own spacing a rotated swath loses a few pixels to nearest-neighbour sampling
    assert len(set(zip(gl[rows, cols], gs[rows, cols], strict=True))) >= 0.9 * 12 * 9


def test_missing_prisma_attribute_is_one_line(tmp_path):
    import h5py

    path = write_prisma_l1(tmp_path, lines=10, samples=8)
    with h5py.File(path, "a") as h5:
        del h5.attrs["ScaleFactor_Swir"]
    from eo_pipeline.errors import MissingVariableError

    with pytest.raises(MissingVariableError, match=path.name + ".*ScaleFactor_Swir"):
        open_radiance(path)


# ------------------------------------------------------------------ plumes, IME, Q
def _utm_map(values, pixel=30.0):
    import xarray as xr
    from pyproj import CRS

    from eo_pipeline.readers.radiance import spatial_ref_attrs

    rows, cols = values.shape
    from affine import Affine

    t = Affine(pixel, 0, 500000.0, 0, -pixel, 3500000.0)
    ds = xr.Dataset({"ch4_enhancement": (("line", "sample"), values, {"units": "ppm m"})},
                    coords={"x": ("sample", 500000.0 + pixel * (np.arange(cols) + 0.5)),
                            "y": ("line", 3500000.0 - pixel * (np.arange(rows) + 0.5)),
                            "spatial_ref": ((), 0, spatial_ref_attrs(CRS.from_epsg(32614), t))})
    return ds


def test_ime_and_emission_rate_hand_computed():
    e = np.zeros((40, 40))
    e[10:20, 10:20] = 1000.0  # a square plume, no noise
    ds = _utm_map(e, pixel=30.0)
    ds["ch4_enhancement_uncertainty"] = (("line", "sample"), np.full(e.shape, 100.0))
    table = find_plumes(ds, threshold=300.0, wind_speed=5.0, sensor="EMIT", wind_speed_uncertainty=1.0)
    assert len(table) == 1
    row = table.iloc[0]
    k = 1e-6 * 0.01604 * 101325 / (8.314462618 * 288.15)
    assert mass_per_ppm_m() == pytest.approx(k) and k == pytest.approx(6.784e-7, rel=1e-3)
    # the mask is the square grown by one pixel (12 x 12); the ring holds zeros
    assert row.pixels == 144 and row.area_m2 == pytest.approx(144 * 900.0)
    ime = k * 1000.0 * 100 * 900.0
    assert row.ime_kg == pytest.approx(ime)
    ueff = 0.43 + 0.36 * 5.0
    q = ueff * ime / np.sqrt(144 * 900.0) * 3600
    assert row.emission_kg_h == pytest.approx(q)
    sig_ime = k * np.sqrt(144 * (100.0 * 900.0) ** 2)
    assert row.ime_uncertainty_kg == pytest.approx(sig_ime)
    assert row.emission_uncertainty_kg_h == pytest.approx(q * np.hypot(sig_ime / ime, 0.36 * 1.0 / ueff))
    assert row.max_ppm_m == 1000.0 and row.mean_ppm_m == pytest.approx(1000.0 * 100 / 144)
    assert table.crs.to_epsg() == 4326 and table.geometry.iloc[0].is_valid
    assert table.geometry.iloc[0].contains(__import__("shapely").geometry.Point(row.lon, row.lat))
    with pytest.raises(ConfigError, match="calibration"):
        find_plumes(ds, threshold=300.0, wind_speed=5.0, sensor="NOSUCH")


def test_pixel_area_on_lonlat_grid():
    import xarray as xr
    from pyproj import CRS

    from eo_pipeline.readers.radiance import spatial_ref_attrs

    d = 0.0005
    from affine import Affine

    ds = xr.Dataset(coords={"x": ("sample", -100 + d * (np.arange(4) + 0.5)),
                            "y": ("line", 32 - d * (np.arange(3) + 0.5)),
                            "spatial_ref": ((), 0, spatial_ref_attrs(CRS.from_epsg(4326),
                                                                     Affine(d, 0, -100, 0, -d, 32)))})
    area = pixel_area_m2(ds.assign(ch4_enhancement=(("line", "sample"), np.zeros((3, 4)))))
    from pyproj import Geod

    a, _ = Geod(ellps="WGS84").polygon_area_perimeter([-100, -100 + d, -100 + d, -100], [32, 32, 32 - d, 32 - d])
    assert area[0, 0] == pytest.approx(abs(a), rel=1e-6)


def test_noise_map_follows_the_albedo_and_large_scenes_need_stronger_cores():
    from eo_pipeline.plumes import core_factor, noise_map

    rng = np.random.default_rng(7)
    albedo = np.where(np.arange(600)[:, None] < 300, 0.6, 1.8) * np.ones((600, 600))
    sigma = np.where(albedo > 1, 300.0, 100.0)  # bright ground: more clutter in ppm m
    e = rng.normal(0.0, 1.0, albedo.shape) * sigma
    nm = noise_map(e, albedo)
    np.testing.assert_allclose(nm[albedo > 1], 300.0, rtol=0.03)
    np.testing.assert_allclose(nm[albedo < 1], 100.0, rtol=0.03)
    assert core_factor(750) == 2.0 and core_factor(1280 * 1242) == pytest.approx(2.7, abs=0.05)
    ds = _utm_map(e).assign(albedo_factor=(("line", "sample"), albedo))
    assert len(find_plumes(ds)) == 0  # 360 000 pixels of noise of two levels: no plume
    # one scene-wide noise (without the albedo) would find false plumes on the bright half
    assert len(find_plumes(_utm_map(e))) > 0


def test_noise_alone_gives_no_plume():
    rng = np.random.default_rng(0)
    e = rng.normal(0, 150.0, (120, 120))
    assert len(find_plumes(_utm_map(e))) == 0


# ------------------------------------------------------------------ real cube, planted plume
@pytest.fixture(scope="module")
def aviris():
    return open_radiance(shared_file(AVIRIS)).load()


def _planted(cube, centre=(12, 15)):
    enh = gaussian_plume_ppm_m(cube.radiance.shape[:2], centre, 3000.0, 3.0)
    out = cube.copy()
    out["radiance"] = (cube.radiance.dims, plant_plume(cube.radiance.values, cube.wavelength.values,
                                                       cube.fwhm.values, enh))
    return out, enh


@pytest.mark.realdata
def test_real_cube_without_plume_is_centred_on_zero(aviris):
    res = ch4_matched_filter(aviris).compute()
    e = res.ch4_enhancement.values
    noise = float(np.median(res.ch4_enhancement_uncertainty.values))
    print(f"AVIRIS-NG real cube, no plume: mean {np.mean(e):.1f} ppm m, std {np.std(e):.1f} ppm m, "
          f"noise floor (median uncertainty) {noise:.1f} ppm m")
    assert abs(np.mean(e)) < 0.05 * np.std(e)
    assert np.std(e) == pytest.approx(noise, rel=0.1)
    assert 30 < noise < 1000  # ppm m: a plausible AVIRIS-NG matched-filter noise floor
    assert len(find_plumes(res)) == 0


@pytest.mark.realdata
@pytest.mark.parametrize("centre", [(12, 15), (8, 10), (16, 20)])
def test_real_cube_planted_plume_is_recovered(aviris, centre):
    cube, enh = _planted(aviris, centre)
    res = ch4_matched_filter(cube).compute()
    e = res.ch4_enhancement.values
    sel = enh > 500
    assert np.mean(e[sel]) == pytest.approx(np.mean(enh[sel]), rel=0.2)
    peak = np.unravel_index(np.nanargmax(e), e.shape)
    assert max(abs(peak[0] - centre[0]), abs(peak[1] - centre[1])) <= 2
    alb = res.ch4_enhancement_albedo_corrected.values
    assert np.mean(alb[sel]) == pytest.approx(np.mean(enh[sel]), rel=0.2)
    # one pass keeps the plume in its own background: biased low, the second pass mends it
    one = ch4_matched_filter(cube, passes=1).compute().ch4_enhancement.values
    assert np.mean(one[sel]) < np.mean(e[sel])
    # IME of the planted mass
    table = find_plumes(res)
    assert len(table) == 1
    mass = mass_per_ppm_m() * float(np.sum(enh * pixel_area_m2(res)))
    assert table.ime_kg.iloc[0] == pytest.approx(mass, rel=0.2)


@pytest.mark.realdata
def test_albedo_correction_holds_over_dark_ground(aviris):
    """A plume over darker-than-average ground: the plain filter reads it low, the corrected one does not."""
    for centre in [(12, 6), (15, 6), (12, 9), (18, 15), (6, 21)]:
        cube, enh = _planted(aviris, centre)
        res = ch4_matched_filter(cube).compute()
        sel = enh > 500
        alb = res.ch4_enhancement_albedo_corrected.values
        assert np.mean(alb[sel]) == pytest.approx(np.mean(enh[sel]), rel=0.15), centre
        factor = float(np.mean(res.albedo_factor.values[sel]))
        plain = float(np.mean(res.ch4_enhancement.values[sel]) / np.mean(enh[sel]))
        if factor < 0.85:  # dark ground: the plain filter is biased low by about the albedo factor
            assert plain < 0.85 and abs(plain / factor - 1) < 0.15
        table = find_plumes(res, variable="ch4_enhancement_albedo_corrected")
        mass = mass_per_ppm_m() * float(np.sum(enh * pixel_area_m2(res)))
        assert len(table) == 1 and table.ime_kg.iloc[0] == pytest.approx(mass, rel=0.2), centre
        assert table.enhancement.iloc[0] == "ch4_enhancement_albedo_corrected"


def test_emit_scene_column_wise_planted_plume(tmp_path):
    path = write_emit_l1b(tmp_path, lines=400, samples=24, plume={"centre": (200, 12), "peak": 3000.0, "sigma": 3.0},
                          seed=2)
    cube = open_radiance(path)
    res = ch4_matched_filter(cube).compute()
    assert res.attrs["matched_filter_background"] == "column"  # sensor geometry, 400 lines >= 5 x 48 bands
    e = res.ch4_enhancement.values
    enh = gaussian_plume_ppm_m(e.shape, (200, 12))
    sel = enh > 500
    assert np.mean(e[sel]) == pytest.approx(np.mean(enh[sel]), rel=0.2)
    peak = np.unravel_index(np.nanargmax(e), e.shape)
    assert abs(peak[0] - 200) <= 2 and abs(peak[1] - 12) <= 2


# ------------------------------------------------------------------ the command, as a whole process
def test_cli_plumes_on_emit_scene(tmp_path):
    import rasterio

    path = write_emit_l1b(tmp_path / "in", plume={"centre": (80, 70), "peak": 3000.0, "sigma": 3.0})
    out = tmp_path / "out"
    run = subprocess.run([*CLI, "plumes", str(path), "--wind-speed", "4", "-o", str(out)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names = {"ch4_enhancement.tif", "ch4_enhancement_albedo_corrected.tif", "plume_mask.tif", "plumes.csv",
             "plumes.geojson", "quicklook.png"}
    assert names <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if ".eo-tmp" in p.name]
    with rasterio.open(out / "ch4_enhancement.tif") as src:
        assert src.crs.to_epsg() == 4326 and src.count == 2
        assert src.descriptions == ("ch4_enhancement", "ch4_enhancement_uncertainty")
        assert src.tags(1)["units"] == "ppm m"
        data = src.read(1)
        r, c = np.unravel_index(np.nanargmax(data), data.shape)
        lon, lat = src.xy(r, c)
    gj = json.loads((out / "plumes.geojson").read_text())
    assert len(gj["features"]) == 1
    props = gj["features"][0]["properties"]
    # the planted centre is the scene centre (-103.85, 31.95)
    assert abs(props["lon"] + 103.85) < 0.003 and abs(props["lat"] - 31.95) < 0.003
    assert abs(lon + 103.85) < 0.003 and abs(lat - 31.95) < 0.003
    assert props["emission_kg_h"] > 0 and props["ueff_m_s"] == pytest.approx(0.43 + 0.36 * 4)
    assert "plume 1" in run.stderr
    import pandas as pd

    csv = pd.read_csv(out / "plumes.csv")
    assert list(csv.plume_id) == [1] and csv.ime_kg.iloc[0] == pytest.approx(props["ime_kg"])


def test_cli_plumes_errors_are_one_line(tmp_path):
    run = subprocess.run([*CLI, "plumes", str(tmp_path / "nope_rdn"), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "nope_rdn" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.realdata
def test_cli_plumes_on_real_aviris_cube_pixel_grid(tmp_path):
    import rasterio

    path = shared_file(AVIRIS)
    run = subprocess.run([*CLI, "plumes", str(path), "--wind-speed", "3", "--ueff", "0.4", "0.35",
                          "-o", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with rasterio.open(tmp_path / "ch4_enhancement.tif") as src:
        assert (src.height, src.width) == (25, 30)
        assert src.transform.c == pytest.approx(353128.751647949) and src.transform.a == pytest.approx(15.0)
        assert src.crs.to_epsg() == 32611
    with rasterio.open(tmp_path / "plume_mask.tif") as src:
        assert src.read(1).max() == 0


def test_calibration_table_is_the_configs_copy():
    from eo_pipeline.plumes import load_calibration

    root = Path(__file__).resolve().parents[1]
    packaged = root / "eo_pipeline" / "data" / "plume_calibration.yaml"
    assert packaged.read_text() == (root / "configs" / "plume_calibration.yaml").read_text()
    table = load_calibration()
    assert table["EMIT"] == {"a": 0.43, "b": 0.36} and table["ENMAP"]["b"] == 0.33 and table["PRISMA"]["a"] == 0.43


# ------------------------------------------------------------------ in a job: resumable, catalogued
def test_job_with_plume_stage_is_resumable_and_catalogued(tmp_path):
    import pystac
    import rasterio

    a = write_emit_l1b(tmp_path / "in", plume={"centre": (80, 70), "peak": 3000.0, "sigma": 3.0})
    cfg = tmp_path / "job.yaml"
    cfg.write_text("name: plumejob\nplumes:\n  inputs: [in/*.nc]\n  wind_speed: 4\n  grid: plumes_grid\n"
                   "grids:\n  plumes_grid: {bbox: [-104.0, 31.8, -103.7, 32.1], resolution: 0.01}\n"
                   "gridding: {grid: global_0p1}\noutput: {dir: out}\n")
    run = subprocess.run([*CLI, "run", str(cfg), "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    scene = a.stem
    made = {p.name for p in out.iterdir()}
    for name in ("ch4_enhancement.tif", "ch4_enhancement_albedo_corrected.tif", "plume_mask.tif", "plumes.csv",
                 "plumes.geojson", "quicklook.png", "ch4_enhancement_plumes_grid.tif"):
        assert f"{scene}_{name}" in made
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"][f"{scene}_plumes.csv"]["step"] == f"plumes/{scene}"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob(f"{scene}_*")}
    # a rerun leaves everything as it is; a second scene adds only its outputs
    b = write_emit_l1b(tmp_path / "in", seed=4, start="20230815T180000", orbit="2322700", scene="001")
    run = subprocess.run([*CLI, "run", str(cfg), "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob(f"{scene}_*")} == before
    assert (out / f"{b.stem}_plumes.csv").exists()
    # the catalogue: one item per scene, with its time, the COG assets and per-band assets
    col = pystac.Collection.from_file(str(out / "collection.json"))
    items = {i.id: i for i in col.get_items()}
    item = items[f"{scene}_ch4_plumes"]
    assert item.datetime.isoformat().startswith("2023-08-14T19:30:21")
    assert {"enhancement", "mask", "plumes", "plumes_table", "overview", "ch4_enhancement"} <= set(item.assets)
    with rasterio.open(item.assets["enhancement"].get_absolute_href()) as src:
        cog = src.read(1)
    with rasterio.open(item.assets["ch4_enhancement"].get_absolute_href()) as src:
        np.testing.assert_array_equal(src.read(1), cog)
    import odc.stac

    loaded = odc.stac.load([item], bands=["ch4_enhancement"])
    np.testing.assert_array_equal(loaded["ch4_enhancement"].isel(time=0).values, cog)


def test_plume_job_on_a_local_cluster_gives_the_same_maps(tmp_path):
    import rasterio

    path = write_emit_l1b(tmp_path / "in", lines=60, samples=50, plume={"centre": (30, 25), "peak": 3000.0,
                                                                         "sigma": 3.0})
    maps = {}
    for name, extra in (("threads", ""), ("cluster", "cluster: {type: local, workers: 2}\n")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"name: p\nplumes:\n  inputs: [in/*.nc]\ngridding: {{grid: global_0p1}}\n"
                       f"output: {{dir: out_{name}}}\n{extra}")
        run = subprocess.run([*CLI, "run", str(cfg), "-q"], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        with rasterio.open(tmp_path / f"out_{name}" / f"{path.stem}_ch4_enhancement.tif") as src:
            maps[name] = (src.read(), src.transform, src.crs)
    np.testing.assert_array_equal(maps["threads"][0], maps["cluster"][0])
    assert maps["threads"][1:] == maps["cluster"][1:]


def test_envi_sensor_geometry_with_loc_and_glt_side_files(tmp_path):
    """An unorthorectified AVIRIS-NG-style delivery: _rdn cube (BIL), _loc (lon, lat, elev), _glt (+map info)."""
    import rasterio

    from eo_pipeline.plume_stage import run_plumes
    from eo_pipeline.samples.hyperspectral import synthetic_radiance

    lines, samples = 90, 40
    wave = np.arange(380.0, 2510.0, 5.0)
    cube = synthetic_radiance(lines, samples, wave, np.full(wave.size, 6.0), seed=3)
    cube = plant_plume(cube, wave, np.full(wave.size, 6.0), gaussian_plume_ppm_m((lines, samples), (45, 20)))
    waves = "wavelength units = Nanometers\nwavelength = {" + ", ".join(f"{w:.2f}" for w in wave) + "}\n"
    _write_envi(tmp_path, "ang20230101t120000_rdn_v2z1", cube, "bil", extra=waves)
    ll, ss = np.indices((lines, samples), dtype=np.float64)
    lon = -110.0 + ss * 1e-4
    lat = 40.0 - ll * 1e-4
    loc = np.stack([lon, lat, np.full(lon.shape, 1500.0)], axis=-1)
    order = loc.transpose(0, 2, 1)  # BIL
    (tmp_path / "ang20230101t120000_loc").write_bytes(order.astype("<f8").tobytes())
    (tmp_path / "ang20230101t120000_loc.hdr").write_text(
        f"ENVI\nsamples = {samples}\nlines = {lines}\nbands = 3\nheader offset = 0\ndata type = 5\n"
        "interleave = bil\nbyte order = 0\n")
    # GLT: a north-up grid of the same pixels, flipped east-west, one empty column
    glt = np.zeros((lines, samples + 1, 2), np.int32)
    glt[:, 1:, 0] = (samples - np.arange(samples))[None, :]  # 1-based sample
    glt[:, 1:, 1] = (np.arange(lines) + 1)[:, None]  # 1-based line
    (tmp_path / "ang20230101t120000_glt").write_bytes(glt.transpose(2, 0, 1).astype("<i4").tobytes())
    (tmp_path / "ang20230101t120000_glt.hdr").write_text(
        f"ENVI\nsamples = {samples + 1}\nlines = {lines}\nbands = 2\nheader offset = 0\ndata type = 3\n"
        "interleave = bsq\nbyte order = 0\nmap info = {UTM, 1, 1, 500000, 4400000, 5, 5, 12, North, WGS-84}\n")
    ds = open_radiance(tmp_path / "ang20230101t120000_rdn_v2z1")
    assert ds.attrs["time"] == "2023-01-01T12:00:00Z" and ds.attrs["instrument"] == "AVIRIS-NG"
    np.testing.assert_allclose(ds.lon.values, lon)
    np.testing.assert_allclose(ds.lat.values, lat)
    assert ds.glt_sample.shape == (lines, samples + 1) and (ds.glt_sample.values[:, 0] == -1).all()
    assert ds.glt_sample.values[0, 1] == samples - 1 and ds.glt_line.values[5, 3] == 5
    run = run_plumes(ds.attrs["source_file"], tmp_path / "out", ueff=(0.4, 0.3), wind_speed=3.0)
    with rasterio.open(tmp_path / "out" / "ch4_enhancement.tif") as src:
        assert src.crs.to_epsg() == 32612 and src.transform.c == 500000.0 and src.transform.a == 5.0
        data = src.read(1)
    assert np.isnan(data[:, 0]).all()
    r, c = np.unravel_index(np.nanargmax(data), data.shape)
    # sensor (45, 20) sits at GLT column samples - 20 (the grid is flipped east-west, column 0 empty)
    assert abs(r - 45) <= 2 and abs(c - (samples - 20)) <= 2
    assert len(run["plumes"]) == 1


def test_info_describes_a_radiance_cube(tmp_path):
    path = write_emit_l1b(tmp_path, lines=20, samples=10)
    run = subprocess.run([*CLI, "info", str(path), "--json"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["reader"] == "emit_l1b_rad" and (info["lines"], info["samples"], info["bands"]) == (20, 10, 285)
    assert info["geolocation"] == "geometry lookup table" and info["time"] == "2023-08-14T19:30:21Z"
    run = subprocess.run([*CLI, "info", str(path)], capture_output=True, text=True)
    assert "radiance cube (EMIT" in run.stdout and "eo-pipeline plumes" in run.stdout
