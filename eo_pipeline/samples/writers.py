# SPDX-License-Identifier: Apache-2.0
"""Writers of small files in the exact layouts of the real products.

They write groups, names, dtypes, fill values, scale factors, attributes and
compression as the missions' processors do, from arrays the caller provides,
and mark every file synthetic in its global attributes. The sample scenes and the
test fixtures are both made with them, so a layout is defined in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

S5P_FILL_FLOAT = np.float32(9.96921e36)
S5P_FILL_INT32 = np.int32(-2147483647)
S5P_FILL_UBYTE = np.uint8(255)
LITE_FILL = -999999.0
SYNTHETIC_NOTE = (
    "SYNTHETIC sample data made by 'eo-pipeline make-samples' in the layout of the real "
    "product; not a measurement, not for science use"
)
_Z = {"zlib": True, "complevel": 4, "shuffle": True}


def _synthetic_attrs(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    attrs = {"synthetic": "true", "synthetic_note": SYNTHETIC_NOTE}
    attrs.update(extra or {})
    return attrs


def _var(
    group: netCDF4.Group, name: str, dtype: Any, dims: tuple[str, ...], data: Any,
    attrs: Mapping[str, Any] | None = None, fill: Any = None, chunks: tuple[int, ...] | None = None,
) -> netCDF4.Variable:
    kw: dict[str, Any] = dict(_Z)
    if chunks is not None:
        kw["chunksizes"] = chunks
    v = group.createVariable(name, dtype, dims, fill_value=fill, **kw)
    v.set_auto_maskandscale(False)
    for k, val in (attrs or {}).items():
        v.setncattr(k, val)
    if data is not None:
        v[...] = data
    return v


# ---------------------------------------------------------------------------------
# Sentinel-5P L2 (CH4, CO)
# ---------------------------------------------------------------------------------

S5P_PRODUCTS: dict[str, dict[str, Any]] = {
    "CH4": {
        "short_name": "L2__CH4___",
        "title": "TROPOMI/S5P Methane 1-Orbit L2 Swath 5.5x7.0km",
        "references": "https://sentinels.copernicus.eu/web/sentinel/technical-guides/sentinel-5p/products-algorithms; http://www.tropomi.eu/data-products/methane",
        "doi": "10.5270/S5P-3lcdqiv",
        "layers": 12,
        "algorithm_version": "1.5.0",
        "product_version": "1.5.0",
    },
    "CO": {
        "short_name": "L2__CO____",
        "title": "TROPOMI/S5P CO Column 1-Orbit L2 Swath 5.5x7km",
        "references": "http://www.tropomi.eu/data-products/carbon-monoxide",
        "doi": "10.5270/S5P-bj3nry0",
        "layers": 50,
        "algorithm_version": "2.2.0",
        "product_version": "1.5.0",
    },
}


def s5p_filename(product: str, start: np.datetime64, end: np.datetime64, orbit: int, processor: str,
                 created: np.datetime64, mode: str = "OFFL") -> str:
    """Real S5P file name, e.g. ``S5P_OFFL_L2__CH4____20230715T043512_..._29781_03_020500_...nc``."""
    def stamp(t: np.datetime64) -> str:
        return str(np.datetime_as_string(t, unit="s")).replace("-", "").replace(":", "")

    short = S5P_PRODUCTS[product]["short_name"]
    return f"S5P_{mode}_{short}_{stamp(start)}_{stamp(end)}_{orbit:05d}_03_{processor}_{stamp(created)}.nc"


def _s5p_root_attrs(product: str, ident: str, t_ref: np.datetime64, start: str, end: str, orbit: int,
                    processor_version: str, created: str, lat: np.ndarray, lon: np.ndarray) -> dict[str, Any]:
    info = S5P_PRODUCTS[product]
    ref_s = int((t_ref - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "s"))
    return {
        "Conventions": "CF-1.7",
        "institution": "KNMI/SRON" if product == "CH4" else "SRON",
        "source": "Sentinel 5 precursor, TROPOMI, space-borne remote sensing, L2",
        "summary": info["title"],
        "id": ident,
        "time_reference": str(np.datetime_as_string(t_ref, unit="s")) + "Z",
        "time_reference_days_since_1950": np.int32(ref_s // 86400 + 7305),
        "time_reference_julian_day": np.float64(ref_s / 86400 + 2440587.5),
        "time_reference_seconds_since_1970": np.int64(ref_s),
        "time_coverage_start": start,
        "time_coverage_end": end,
        "time_coverage_resolution": "PT0.840S",
        "orbit": np.int32(orbit),
        "references": info["references"],
        "processor_version": processor_version,
        "naming_authority": "nl.knmi",
        "cdm_data_type": "Swath",
        "date_created": created,
        "project": "Sentinel 5 precursor/TROPOMI",
        "geospatial_lat_min": np.float32(np.nanmin(lat)),
        "geospatial_lat_max": np.float32(np.nanmax(lat)),
        "geospatial_lon_min": np.float32(np.nanmin(lon)),
        "geospatial_lon_max": np.float32(np.nanmax(lon)),
        "license": "No conditions apply",
        "platform": "S5P",
        "sensor": "TROPOMI",
        "spatial_resolution": "5.5x7km2",
        "geolocation_grid_from_band": np.int32(7),
        "identifier_product_doi": info["doi"],
        "identifier_product_doi_authority": "http://dx.doi.org/",
        "algorithm_version": info["algorithm_version"],
        "title": info["title"],
        "product_version": info["product_version"],
        "processing_status": "Nominal",
    }


def write_s5p_l2(
    path: str | Path,
    product: str,
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    lat_bounds: np.ndarray | None,
    lon_bounds: np.ndarray | None,
    scanline_time: np.ndarray,
    columns: Mapping[str, np.ndarray],
    qa_value: np.ndarray | None,
    orbit: int,
    processor: str = "020500",
    surface_classification: np.ndarray | None = None,
    averaging_kernel: np.ndarray | None = None,
    extra_global_attrs: Mapping[str, Any] | None = None,
    metadata: bool = True,
) -> Path:
    """Write an S5P L2 CH4 or CO file in the operational layout.

    Parameters
    ----------
    path : path-like
        Output file.
    product : {"CH4", "CO"}
        Which product layout.
    lat, lon : ndarray (scanline, ground_pixel)
        Pixel centres, degrees; NaN is written as the fill value.
    lat_bounds, lon_bounds : ndarray (scanline, ground_pixel, 4) or None
        Corners in S5P order; None omits them (as some subsets do).
    scanline_time : ndarray of datetime64 (scanline,)
        Scanline start times (UTC).
    columns : mapping
        PRODUCT variable name -> (scanline, ground_pixel) float array (NaN = fill), in
        the file's units (1e-9 for CH4, mol m-2 for CO).
    qa_value : ndarray (scanline, ground_pixel) of float in 0..1, or None to omit it.
    orbit : int
        Absolute orbit number.
    processor : str
        Processor version as in the file name (``020500``).
    surface_classification : ndarray of uint8, optional
    averaging_kernel : ndarray (scanline, ground_pixel, layer), optional
    extra_global_attrs : mapping, optional
        Added to (and overriding) the global attributes.
    metadata : bool
        Write the ``METADATA`` group with ``GRANULE_DESCRIPTION``.
    """
    path = Path(path)
    info = S5P_PRODUCTS[product]
    n_scan, n_pix = lat.shape
    t0 = scanline_time.astype("datetime64[ms]")
    t_ref = t0[0].astype("datetime64[D]").astype("datetime64[s]")
    proc_version = f"{int(processor[0:2])}.{int(processor[2:4])}.{int(processor[4:6])}"
    start = str(np.datetime_as_string(t0[0], unit="s")) + "Z"
    end = str(np.datetime_as_string(t0[-1], unit="s")) + "Z"
    created = "2023-07-17T05:30:12Z"
    ident = path.name.rsplit(".", 1)[0]
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        attrs = _s5p_root_attrs(product, ident, t_ref, start, end, orbit, proc_version, created, lat, lon)
        attrs.update(_synthetic_attrs(extra_global_attrs))
        nc.setncatts(attrs)
        g = nc.createGroup("PRODUCT")
        layers = info["layers"]
        for dim, size in (("scanline", n_scan), ("ground_pixel", n_pix), ("corner", 4), ("time", 1),
                          ("layer", layers)):
            g.createDimension(dim, size)
        if product == "CH4":
            g.createDimension("level", layers + 1)
        ch3 = (1, n_scan, n_pix)
        idx_attrs = {"units": "1", "long_name": "along-track dimension index", "axis": "Y"}
        _var(g, "scanline", "i4", ("scanline",), np.arange(n_scan, dtype="i4"), idx_attrs, S5P_FILL_INT32)
        _var(g, "ground_pixel", "i4", ("ground_pixel",), np.arange(n_pix, dtype="i4"),
             {"units": "1", "long_name": "across-track dimension index", "axis": "X",
              "comment": "This coordinate variable defines the indices across track, from west to east; index starts at 0"},
             S5P_FILL_INT32)
        t_ref_2010 = int((t_ref - np.datetime64("2010-01-01T00:00:00")) / np.timedelta64(1, "s"))
        _var(g, "time", "i4", ("time",), np.array([t_ref_2010], "i4"),
             {"units": "seconds since 2010-01-01 00:00:00", "standard_name": "time", "axis": "T",
              "long_name": "reference time for the measurements"}, S5P_FILL_INT32)
        _var(g, "corner", "i4", ("corner",), np.arange(4, dtype="i4"),
             {"units": "1", "long_name": "pixel corner index"}, S5P_FILL_INT32)
        _var(g, "layer", "f4" if product == "CO" else "i4", ("layer",), np.arange(layers), {"axis": "Z", "positive": "down"})
        if product == "CH4":
            _var(g, "level", "i4", ("level",), np.arange(layers + 1, dtype="i4"), {"axis": "Z", "positive": "down"})
        delta = ((t0 - t_ref.astype("datetime64[ms]")) / np.timedelta64(1, "ms")).astype("i4")
        day = str(np.datetime_as_string(t_ref, unit="D"))
        _var(g, "delta_time", "i4", ("time", "scanline"), delta[None, :],
             {"long_name": "offset of start time of measurement relative to time_reference",
              "units": f"milliseconds since {day} 00:00:00"}, S5P_FILL_INT32)
        tu = g.createVariable("time_utc", str, ("time", "scanline"))
        tu.long_name = "Time of observation as ISO 8601 date-time string"
        tu[0, :] = np.array([str(np.datetime_as_string(t, unit="ms")) + "Z" for t in t0], dtype=object)
        if qa_value is not None:
            qa = np.where(np.isfinite(qa_value), np.rint(np.nan_to_num(qa_value) * 100), 255).astype("u1")
            _var(g, "qa_value", "u1", ("time", "scanline", "ground_pixel"), qa[None],
                 {"units": "1", "scale_factor": np.float32(0.01), "add_offset": np.float32(0.0),
                  "valid_min": np.uint8(0), "valid_max": np.uint8(100), "long_name": "data quality value",
                  "comment": "A continuous quality descriptor, varying between 0 (no data) and 1 (full quality data). Recommend to ignore data with qa_value < 0.5",
                  "coordinates": "longitude latitude"}, S5P_FILL_UBYTE, chunks=ch3)
        geo_attrs = {"latitude": ("pixel center latitude", "degrees_north", -90.0, 90.0),
                     "longitude": ("pixel center longitude", "degrees_east", -180.0, 180.0)}
        for name, arr in (("latitude", lat), ("longitude", lon)):
            ln, units, lo, hi = geo_attrs[name]
            _var(g, name, "f4", ("time", "scanline", "ground_pixel"), _fill(arr)[None],
                 {"long_name": ln, "units": units, "standard_name": name, "valid_min": np.float32(lo),
                  "valid_max": np.float32(hi), "bounds": f"/PRODUCT/SUPPORT_DATA/GEOLOCATIONS/{name}_bounds"},
                 S5P_FILL_FLOAT, chunks=ch3)
        for name, arr in columns.items():
            _var(g, name, "f4", ("time", "scanline", "ground_pixel"), _fill(arr)[None],
                 _s5p_column_attrs(product, name), S5P_FILL_FLOAT, chunks=ch3)
        sup = g.createGroup("SUPPORT_DATA")
        geo = sup.createGroup("GEOLOCATIONS")
        if lat_bounds is not None and lon_bounds is not None:
            for name, arr in (("latitude_bounds", lat_bounds), ("longitude_bounds", lon_bounds)):
                _var(geo, name, "f4", ("time", "scanline", "ground_pixel", "corner"), _fill(arr)[None],
                     {}, S5P_FILL_FLOAT, chunks=(1, n_scan, n_pix, 4))
        _var(geo, "solar_zenith_angle", "f4", ("time", "scanline", "ground_pixel"),
             _fill(np.clip(np.abs(lat - 21.5) + 5.0, 0, 89))[None],
             {"long_name": "solar zenith angle", "standard_name": "solar_zenith_angle", "units": "degree",
              "valid_min": np.float32(0.0), "valid_max": np.float32(180.0),
              "coordinates": "/PRODUCT/longitude /PRODUCT/latitude"}, S5P_FILL_FLOAT, chunks=ch3)
        det = sup.createGroup("DETAILED_RESULTS")
        if averaging_kernel is not None:
            _var(det, "column_averaging_kernel", "f4", ("time", "scanline", "ground_pixel", "layer"),
                 _fill(averaging_kernel)[None],
                 {"units": "1" if product == "CH4" else "m",
                  "long_name": "Column averaging kernel for the methane retrieval" if product == "CH4"
                  else "averaging kernel for the carbon monoxide total column",
                  "coordinates": "/PRODUCT/longitude /PRODUCT/latitude"},
                 S5P_FILL_FLOAT, chunks=(1, n_scan, n_pix, layers))
        inp = sup.createGroup("INPUT_DATA")
        if surface_classification is not None:
            _var(inp, "surface_classification", "u1", ("time", "scanline", "ground_pixel"),
                 surface_classification[None].astype("u1"), SURFACE_CLASSIFICATION_ATTRS, S5P_FILL_UBYTE, chunks=ch3)
        if metadata:
            meta = nc.createGroup("METADATA")
            gd = meta.createGroup("GRANULE_DESCRIPTION")
            gd.setncatts({
                "GranuleStart": start, "GranuleEnd": end, "InstrumentName": "TROPOMI",
                "MissionName": "Sentinel-5 precursor", "MissionShortName": "S5P", "ProcessLevel": "2",
                "ProcessingCenter": "PDGS-OP", "ProcessorVersion": f"{processor[0:2]}.{processor[2:4]}.{processor[4:6]}",
                "ProductFormatVersion": "10100", "ProcessingMode": "Offline", "ProductShortName": info["short_name"],
            })
            meta.createGroup("QA_STATISTICS").setncatts({
                "number_of_groundpixels": str(n_scan * n_pix),
                "number_of_successfully_processed_pixels": str(int(np.isfinite(next(iter(columns.values()))).sum())),
            })
            meta.createGroup("ALGORITHM_SETTINGS").setncatts({"configuration.version.algorithm": info["algorithm_version"]})
    return path


SURFACE_CLASSIFICATION_ATTRS: dict[str, Any] = {
    "long_name": "Land-water mask and surface classification based on a static database",
    "comment": "Flag indicating land/water and further surface classifications for the ground pixel",
    "flag_meanings": "land water some_water coast value_covers_majority_of_pixel",
    "flag_values": np.array([0, 1, 2, 3, 4], dtype="u1"),
    "flag_masks": np.array([3, 3, 3, 3, 4], dtype="u1"),
    "coordinates": "/PRODUCT/longitude /PRODUCT/latitude",
}


def _s5p_column_attrs(product: str, name: str) -> dict[str, Any]:
    if product == "CH4":
        long = {
            "methane_mixing_ratio": "column averaged dry air mixing ratio of methane",
            "methane_mixing_ratio_precision": "precision of the column averaged dry air mixing ratio of methane",
            "methane_mixing_ratio_bias_corrected": "corrected column-averaged dry-air mole fraction of methane",
            "methane_mixing_ratio_bias_corrected_destriped": "destriped bias corrected column-averaged dry-air mole fraction of methane",
        }[name]
        std = "dry_atmosphere_mole_fraction_of_methane"
        if name.endswith("precision"):
            std += " standard_error"
        return {"units": "1e-9", "standard_name": std, "long_name": long, "coordinates": "longitude latitude"}
    long = {
        "carbonmonoxide_total_column": "Vertically integrated CO column",
        "carbonmonoxide_total_column_precision": "Standard error of vertically integrated CO column",
        "carbonmonoxide_total_column_corrected": "Vertically integrated CO column, corrected for stripes",
    }[name]
    attrs = {"units": "mol m-2", "standard_name": "atmosphere_mole_content_of_carbon_monoxide",
             "long_name": long, "coordinates": "longitude latitude",
             "multiplication_factor_to_convert_to_molecules_percm2": np.float32(6.022141e19)}
    if name.endswith("precision"):
        attrs["standard_name"] += " standard_error"
    return attrs


def _fill(arr: np.ndarray, fill: np.float32 = S5P_FILL_FLOAT) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    return np.where(np.isfinite(a), a, fill).astype(np.float32)


# ---------------------------------------------------------------------------------
# S5P blended TROPOMI+GOSAT CH4
# ---------------------------------------------------------------------------------


def write_s5p_blended(
    path: str | Path, *, lat: np.ndarray, lon: np.ndarray, lat_bounds: np.ndarray, lon_bounds: np.ndarray,
    time: np.ndarray, xch4_blended: np.ndarray, xch4_bias_corrected: np.ndarray, precision: np.ndarray,
    qa_value: np.ndarray,
) -> Path:
    """Write a blended TROPOMI+GOSAT file: flat ``nobs`` layout, no groups."""
    path = Path(path)
    n = lat.size
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(_synthetic_attrs({"Title": "Blended TROPOMI+GOSAT Methane Product",
                                       "Contact": "synthetic sample (no contact)"}))
        for dim, size in (("nobs", n), ("layer", 12), ("corner", 4)):
            nc.createDimension(dim, size)
        qa = np.rint(qa_value * 100).astype("u1")
        _var(nc, "qa_value", "u1", ("nobs",), qa, {"units": "1", "scale_factor": np.float32(0.01),
             "add_offset": np.float32(0.0), "long_name": "data quality value"}, S5P_FILL_UBYTE)
        for name, arr, units in (("latitude", lat, "degrees_north"), ("longitude", lon, "degrees_east")):
            _var(nc, name, "f4", ("nobs",), _fill(arr), {"units": units, "standard_name": name}, S5P_FILL_FLOAT)
        for name, arr in (("methane_mixing_ratio_precision", precision),
                          ("methane_mixing_ratio_bias_corrected", xch4_bias_corrected),
                          ("methane_mixing_ratio_blended", xch4_blended)):
            _var(nc, name, "f4", ("nobs",), _fill(arr), {"units": "1e-9"}, S5P_FILL_FLOAT)
        tu = nc.createVariable("time_utc", str, ("nobs",))
        tu[:] = np.array([str(np.datetime_as_string(t, unit="ms")) + "Z" for t in time.astype("datetime64[ms]")],
                         dtype=object)
        for name, arr in (("latitude_bounds", lat_bounds), ("longitude_bounds", lon_bounds)):
            _var(nc, name, "f4", ("nobs", "corner"), _fill(arr), {}, S5P_FILL_FLOAT)
    return path


# ---------------------------------------------------------------------------------
# OCO-2 / OCO-3 / ACOS L2 Lite
# ---------------------------------------------------------------------------------

LITE_MISSIONS: dict[str, dict[str, Any]] = {
    "OCO-2": {"Platform": "OCO-2", "Sensor": "OCO-2", "prefix": "oco2", "doi": "10.5067/8E4VLCK16O6Q",
              "BuildId": "B11.1.00", "vertices": True},
    "OCO-3": {"Platform": "ISS", "Sensor": "OCO-3", "prefix": "oco3", "doi": "10.5067/XXXXXXXXXXXX",
              "BuildId": "B10.4.00", "vertices": True},
    "GOSAT": {"Platform": "GOSAT", "Sensor": "TANSO-FTS", "prefix": "acos", "doi": "10.5067/VWSABTO7ZII4",
              "BuildId": "B9.2.12", "vertices": False},
}


def write_lite(
    path: str | Path,
    mission: str,
    *,
    sounding_id: np.ndarray,
    time: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    xco2: np.ndarray,
    xco2_uncertainty: np.ndarray,
    quality_flag: np.ndarray,
    vertex_lat: np.ndarray | None = None,
    vertex_lon: np.ndarray | None = None,
    footprint: np.ndarray | None = None,
    operation_mode: np.ndarray | None = None,
    orbit: np.ndarray | None = None,
    land_fraction: np.ndarray | None = None,
    psurf: np.ndarray | None = None,
) -> Path:
    """Write an ACOS-format L2 Lite file (OCO-2, OCO-3 or GOSAT ACOS).

    Floats use ``missing_value`` = -999999 (NaN in the inputs is written as such).
    ``time`` is datetime64 and is written as seconds since 1970-01-01.
    """
    path = Path(path)
    m = LITE_MISSIONS[mission]
    n = lat.size
    levels = 20
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(_synthetic_attrs({
            "identifier_product_doi": m["doi"], "identifier_product_doi_authority": "http://dx.doi.org/",
            "filter_function": "oco2_xco2_quality_flag_b11", "bc_function": "oco2_xco2_bias_correct_b11",
            "Platform": m["Platform"], "Sensor": m["Sensor"], "BuildId": m["BuildId"],
            "title": "ACOS L2 Lite Output", "filtering_state": "Filtered with lite file prefilter",
            "creation_date": "Aug 2023", "contact": "synthetic sample (no contact)",
        }))
        for dim, size in (("sounding_id", n), ("levels", levels), ("epoch_dimension", 7), ("bands", 3),
                          ("footprints", 8)):
            nc.createDimension(dim, size)
        if m["vertices"]:
            nc.createDimension("vertices", 4)
        f4 = {"missing_value": np.float32(LITE_FILL)}
        _var(nc, "sounding_id", "i8", ("sounding_id",), sounding_id.astype("i8"),
             {"units": "none", "long_name": "OCO-2 Sounding ID", "comment": "YYYYMMDDhhmmssmf"})
        secs = (time.astype("datetime64[ms]") - np.datetime64("1970-01-01T00:00:00", "ms")) / np.timedelta64(1, "s")
        _var(nc, "time", "f8", ("sounding_id",), secs,
             {"units": "seconds since 1970-01-01 00:00:00", "long_name": "time", "standard_name": "time",
              "missing_value": LITE_FILL})
        dt = time.astype("datetime64[ms]").astype(object)
        date = np.array([[d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond // 1000] for d in dt],
                        dtype="i2").reshape(n, 7)
        _var(nc, "date", "i2", ("sounding_id", "epoch_dimension"), date,
             {"units": "none", "long_name": "date", "comment": "sounding date in [year, month, day, hour, minute, second, millisecond]"})
        _var(nc, "latitude", "f4", ("sounding_id",), _lite(lat),
             {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude"} | f4)
        _var(nc, "longitude", "f4", ("sounding_id",), _lite(lon),
             {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude"} | f4)
        if m["vertices"]:
            for name, arr, units in (("vertex_latitude", vertex_lat, "degrees_north"),
                                     ("vertex_longitude", vertex_lon, "degrees_east")):
                _var(nc, name, "f4", ("sounding_id", "vertices"), _lite(arr),
                     {"units": units, "long_name": name.replace("_", " "),
                      "comment": "footprint vertices, in order around the footprint"} | f4)
        _var(nc, "xco2", "f4", ("sounding_id",), _lite(xco2),
             {"units": "ppm", "long_name": "Column-averaged dry-air mole fraction of CO2 (includes bias correction)"} | f4)
        _var(nc, "xco2_uncertainty", "f4", ("sounding_id",), _lite(xco2_uncertainty),
             {"units": "ppm", "long_name": "XCO2 posterior error"} | f4)
        _var(nc, "xco2_apriori", "f4", ("sounding_id",), _lite(np.full(n, 417.0)),
             {"units": "ppm", "long_name": "A priori XCO2 Value"} | f4)
        _var(nc, "xco2_quality_flag", "i1", ("sounding_id",), quality_flag.astype("i1"),
             {"units": "none", "long_name": "XCO2 quality flag", "comment": "0=Good, 1=Bad"})
        lev = np.linspace(0.1, 1.0, levels, dtype="f4")
        _var(nc, "pressure_levels", "f4", ("sounding_id", "levels"), np.tile(lev * 900.0, (n, 1)),
             {"units": "hPa", "long_name": "Pressure_Levels",
              "comment": "Pressure at each level; Defined on layer boundaries. These are oriented space-to-surface"} | f4)
        _var(nc, "xco2_averaging_kernel", "f4", ("sounding_id", "levels"), np.tile(0.6 + 0.4 * lev, (n, 1)),
             {"units": "none", "long_name": "XCO2 Column Averaging Kernel"} | f4)
        snd = nc.createGroup("Sounding")
        ret = nc.createGroup("Retrieval")
        nc.createGroup("Meteorology")
        nc.createGroup("Preprocessors")
        for grp, name, arr, dtype, attrs in (
            (snd, "footprint", footprint, "i1", {"units": "none", "long_name": "footprint", "comment": "1-8"}),
            (snd, "operation_mode", operation_mode, "i1",
             {"units": "none", "long_name": "operation_mode", "comment": "0=Nadir, 1=Glint, 2=Target, 3=Transition"}),
            (snd, "orbit", orbit, "i4", {"units": "none", "long_name": "orbit number"}),
            (snd, "land_fraction", land_fraction, "f4", {"units": "percent", "long_name": "land fraction"} | f4),
            (ret, "psurf", psurf, "f4", {"units": "hPa", "long_name": "retrieved surface pressure"} | f4),
        ):
            if arr is not None:
                _var(grp, name, dtype, ("sounding_id",), _lite(arr) if dtype == "f4" else arr.astype(dtype), attrs)
    return path


def _lite(arr: Any) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    return np.where(np.isfinite(a), a, np.float32(LITE_FILL)).astype(np.float32)


# ---------------------------------------------------------------------------------
# ESA CCI GHG L2 (GOSAT OCPR CH4 layout)
# ---------------------------------------------------------------------------------

#: (name, dtype, dims, attrs) of the CCI GOSAT OCPR CH4 layout, in file order.
CCI_CH4_LAYOUT: list[tuple[str, str, tuple[str, ...], dict[str, str]]] = [
    ("xch4_quality_flag", "i1", ("n",), {"long_name": "xch4_quality_flag", "units": "1", "short_description": "good_quality potentially_bad_quality: 0=good, 1=bad"}),
    ("ch4_profile_apriori", "f4", ("n", "m"), {"long_name": "ch4_profile_apriori", "units": "1e-9"}),
    ("longitude", "f4", ("n",), {"long_name": "longitude", "standard_name": "longitude", "units": "degrees_east", "short_description": "Center longitude of the measurement"}),
    ("surface_air_pressure_apriori", "f4", ("n",), {"long_name": "surface_air_pressure_apriori", "units": "hPa"}),
    ("solar_zenith_angle", "f4", ("n",), {"long_name": "solar_zenith_angle", "standard_name": "solar_zenith_angle", "units": "degree"}),
    ("pressure_levels", "f4", ("n", "m"), {"long_name": "pressure_levels", "units": "hPa"}),
    ("xch4_uncertainty", "f4", ("n",), {"long_name": "xch4_uncertainty", "units": "1e-9", "short_description": "Statistical uncertainty of XCH4 in ppb (1-sigma)."}),
    ("latitude", "f4", ("n",), {"long_name": "latitude", "standard_name": "latitude", "units": "degrees_north", "short_description": "Center latitude of the measurement"}),
    ("exposure_id", "S1", ("n", "string_length"), {"long_name": "exposure_id", "units": "1"}),
    ("xch4_averaging_kernel", "f4", ("n", "m"), {"long_name": "xch4_averaging_kernel", "units": "1"}),
    ("retr_flag", "i1", ("n",), {"long_name": "retr_flag", "units": "1", "short_description": "Retrieval type flag (0 = land, 1 = glint)."}),
    ("xch4", "f4", ("n",), {"long_name": "xch4", "standard_name": "dry_atmosphere_mole_fraction_of_methane", "units": "1e-9", "short_description": "Proxy retrieved column-averaged dry-air mole fraction of atmospheric methane (XCH4) in ppb."}),
    ("raw_xch4", "f4", ("n",), {"long_name": "raw_xch4", "units": "1e-9"}),
    ("sensor_zenith_angle", "f4", ("n",), {"long_name": "sensor_zenith_angle", "standard_name": "sensor_zenith_angle", "units": "degree"}),
    ("surface_altitude", "f4", ("n",), {"long_name": "surface_altitude", "standard_name": "surface_altitude", "units": "m"}),
    ("time", "f8", ("n",), {"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01 00:00:00", "short_description": "Measurement time"}),
    ("pressure_weight", "f4", ("n", "m"), {"long_name": "pressure_weight", "units": "1"}),
]
CCI_FILL = np.float32(-9999.99)


def write_esacci_ch4(
    path: str | Path, *, lat: np.ndarray, lon: np.ndarray, time: np.ndarray, xch4: np.ndarray,
    xch4_uncertainty: np.ndarray, quality_flag: np.ndarray, day: str, version: str = "v9.0",
) -> Path:
    """Write an ESA CCI GHG L2 CH4 (GOSAT OCPR) file; NaN is written as -9999.99."""
    path = Path(path)
    n = lat.size
    rng = np.random.default_rng(7)
    secs = (time.astype("datetime64[ms]") - np.datetime64("1970-01-01T00:00:00", "ms")) / np.timedelta64(1, "s")
    lev = np.linspace(1000.0, 100.0, 20, dtype="f4")
    data: dict[str, Any] = {
        "xch4_quality_flag": quality_flag.astype("i1"),
        "ch4_profile_apriori": np.tile(np.linspace(1930, 1500, 20, dtype="f4"), (n, 1)),
        "longitude": lon, "latitude": lat,
        "surface_air_pressure_apriori": np.full(n, 880.0, "f4"),
        "solar_zenith_angle": np.full(n, 30.0, "f4"),
        "pressure_levels": np.tile(lev, (n, 1)),
        "xch4_uncertainty": xch4_uncertainty,
        "exposure_id": netCDF4.stringtochar(np.array([f"2023{day[4:]}{i:014d}"[:22] for i in range(n)], dtype="S22")),
        "xch4_averaging_kernel": np.tile(np.linspace(1.05, 0.6, 20, dtype="f4"), (n, 1)),
        "retr_flag": np.zeros(n, "i1"),
        "xch4": xch4,
        "raw_xch4": xch4 + rng.normal(0, 2, n).astype("f4"),
        "sensor_zenith_angle": np.full(n, 5.0, "f4"),
        "surface_altitude": np.full(n, 1200.0, "f4"),
        "time": secs,
        "pressure_weight": np.full((n, 20), 0.05, "f4"),
    }
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as nc:
        nc.setncatts(_synthetic_attrs({
            "title": "ESA CCI GOSAT OCPR CH4", "institution": "University of Leicester",
            "source": "GOSAT L1B version v220", "Conventions": "CF-1.6", "product_version": version,
            "id": path.name, "cdm_data_type": "point",
            "project": "Climate Change Initiative - European Space Agency",
            "total_retrievals": np.int32(n), "total_good_retrievals": np.int32(int((quality_flag == 0).sum())),
            "time_coverage_start": f"{day}T000000Z", "time_coverage_end": f"{day}T235959Z",
            "time_coverage_duration": "P1D", "platform": "GOSAT", "sensor": "TANSO-FTS",
            "spatial_resolution": "10.5km x 10.5km at nadir (typically)",
        }))
        nc.createDimension("n", n)
        nc.createDimension("m", 20)
        nc.createDimension("string_length", 22)
        for name, dtype, dims, attrs in CCI_CH4_LAYOUT:
            arr = data[name]
            if dtype == "f4":
                arr = np.where(np.isfinite(arr), arr, CCI_FILL).astype("f4")
            _var(nc, name, dtype, dims, arr, attrs)
    return path


# ---------------------------------------------------------------------------------
# Hansen Global Forest Change style GeoTIFFs
# ---------------------------------------------------------------------------------


def write_hansen_tif(
    path: str | Path, data: np.ndarray, *, west: float, north: float, res: float = 0.00025,
    description: str = "", nodata: float | None = 255,
) -> Path:
    """Write a single-band GeoTIFF (EPSG:4326, LZW) like the Hansen GFC / GFW tiles.

    uint8 for integer data (Hansen layers), float32 for floating-point data (GFW
    emissions, Mg CO2e per pixel; pass ``nodata=float("nan")``).
    """
    import rasterio
    from rasterio.transform import from_origin

    path = Path(path)
    dtype = "float32" if np.issubdtype(data.dtype, np.floating) else "uint8"
    profile = {
        "driver": "GTiff", "dtype": dtype, "count": 1, "width": data.shape[1], "height": data.shape[0],
        "crs": "EPSG:4326", "transform": from_origin(west, north, res, res), "compress": "lzw",
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype), 1)
        dst.set_band_description(1, description or path.stem)
        dst.update_tags(synthetic="true", synthetic_note=SYNTHETIC_NOTE)
    return path
