# SPDX-License-Identifier: Apache-2.0
"""The plume stage: a radiance cube to CH4 enhancement maps, plume masks and a plume table.

``run_plumes`` (and ``eo-pipeline plumes``) opens the cube lazily
(:func:`eo_pipeline.open_radiance`), builds the matched filter's graph
(:func:`eo_pipeline.ch4_matched_filter`), computes the 2-D results once, orthorectifies
them through the geometry lookup table where the cube is in sensor geometry and has one
(EMIT, AVIRIS-NG ``_glt``), finds the plumes (:func:`eo_pipeline.find_plumes`) and writes,
into the output folder:

* ``ch4_enhancement.tif`` - bands ``ch4_enhancement`` and ``ch4_enhancement_uncertainty``
  (ppm m); ``ch4_enhancement_albedo_corrected.tif`` - the albedo-corrected pair;
* ``plume_mask.tif`` - plume ids (0 background), uint16, found on the albedo-corrected
  enhancement by default (see :func:`run_plumes`);
* ``plumes.csv`` and ``plumes.geojson`` - the plume table (outlines in EPSG:4326);
* ``quicklook.png`` - the enhancement with the plume outlines.

The maps are Cloud-Optimized GeoTIFFs on the cube's own pixel grid (row = line, column =
sample) in its CRS for orthorectified cubes, on the GLT grid for cubes with one, on a
lon/lat grid at the pixels' spacing (nearest pixel, :func:`lookup_table`) for cubes in
sensor geometry with per-pixel lon/lat only (PRISMA), and on the bare pixel grid (no
CRS, a warning) otherwise. Every file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import GridError, warn
from .io._atomic import temp_path, write_failed

__all__ = ["run_plumes", "orthorectify", "write_pixel_cog", "pixel_transform"]

_MAPS = {
    "ch4_enhancement.tif": ["ch4_enhancement", "ch4_enhancement_uncertainty"],
    "ch4_enhancement_albedo_corrected.tif": ["ch4_enhancement_albedo_corrected",
                                             "ch4_enhancement_albedo_corrected_uncertainty"],
}


def orthorectify(result: xr.Dataset) -> xr.Dataset:
    """Sensor-geometry 2-D results onto their geometry lookup table's grid (nearest pixel).

    Uses ``glt_sample``/``glt_line`` (0-based, -1 empty) and ``glt_spatial_ref``; returns
    the same variables on (line, sample) of the GLT grid with ``x``/``y`` cell centres and
    a ``spatial_ref``; cells without a sensor pixel are NaN (``pixel_mask`` 1).
    """
    from affine import Affine

    gs = np.asarray(result["glt_sample"].values)
    gl = np.asarray(result["glt_line"].values)
    ok = (gs >= 0) & (gl >= 0)
    ref = result.coords["glt_spatial_ref"]
    t = Affine.from_gdal(*(float(v) for v in ref.attrs["GeoTransform"].split()))
    rows, cols = gs.shape
    out = xr.Dataset(attrs=dict(result.attrs, orthorectified="nearest sensor pixel from the geometry lookup table"))
    for name, var in result.data_vars.items():
        if var.dims != ("line", "sample"):
            continue
        values = np.asarray(var.values)
        fill = 1 if name == "pixel_mask" else np.nan
        grid = np.full((rows, cols), fill, dtype=values.dtype if name == "pixel_mask" else np.float32)
        grid[ok] = values[gl[ok], gs[ok]]
        attrs = {k: v for k, v in var.attrs.items() if k != "grid_mapping"}
        if name != "pixel_mask":
            attrs["grid_mapping"] = "spatial_ref"
        out[name] = (("line", "sample"), grid, attrs)
    out.coords["spatial_ref"] = ((), 0, dict(ref.attrs))
    from pyproj import CRS

    units = "degrees" if CRS.from_wkt(ref.attrs["crs_wkt"]).is_geographic else "m"
    out.coords["x"] = ("sample", t.c + t.a * (np.arange(cols) + 0.5), {"units": units})
    out.coords["y"] = ("line", t.f + t.e * (np.arange(rows) + 0.5), {"units": units})
    return out


def lookup_table(lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    """A geometry lookup table for a sensor-geometry cube that has none (PRISMA, unorthorectified ENVI).

    The grid is regular in lon/lat (EPSG:4326) with the pixels' median spacing along
    and across track; each cell takes its nearest pixel centre (in metres, on a local
    tangent plane) if that lies within one pixel spacing, else it is empty. Returns
    ``glt_sample``/``glt_line`` (0-based, -1 empty) and the ``glt_spatial_ref`` coordinate.
    """
    from affine import Affine
    from scipy.spatial import cKDTree

    from .readers.radiance import spatial_ref_attrs

    ok = np.isfinite(lon) & np.isfinite(lat)
    if ok.sum() < 4:
        raise GridError("the cube has too few pixels with lon/lat to be orthorectified")
    lat0 = float(np.nanmedian(lat))
    kx = 111320.0 * np.cos(np.radians(lat0))
    ky = 110574.0

    def spacing(axis: int) -> float:
        d = np.hypot(np.diff(lon, axis=axis) * kx, np.diff(lat, axis=axis) * ky)
        return float(np.nanmedian(d)) if d.size else float("nan")

    step_m = np.nanmin([spacing(0), spacing(1)])
    if not np.isfinite(step_m) or step_m <= 0:
        raise GridError("the cube's lon/lat do not change from pixel to pixel: cannot orthorectify it")
    dlon, dlat = step_m / kx, step_m / ky
    west, east = float(np.nanmin(lon)) - dlon, float(np.nanmax(lon)) + dlon
    south, north = float(np.nanmin(lat)) - dlat, float(np.nanmax(lat)) + dlat
    cols, rows = int(np.ceil((east - west) / dlon)), int(np.ceil((north - south) / dlat))
    lines, samples = np.nonzero(ok)
    tree = cKDTree(np.column_stack([lon[ok] * kx, lat[ok] * ky]))
    gy, gx = np.indices((rows, cols))
    cx, cy = west + (gx + 0.5) * dlon, north - (gy + 0.5) * dlat
    dist, idx = tree.query(np.column_stack([cx.ravel() * kx, cy.ravel() * ky]), distance_upper_bound=step_m)
    hit = np.isfinite(dist)
    gs = np.full(rows * cols, -1, np.int32)
    gl = np.full(rows * cols, -1, np.int32)
    gs[hit], gl[hit] = samples[idx[hit]], lines[idx[hit]]
    t = Affine(dlon, 0.0, west, 0.0, -dlat, north)
    attrs = {"long_name": "0-based {} of the nearest sensor pixel, -1 empty (built from lon/lat)"}
    return {"glt_sample": (("ortho_y", "ortho_x"), gs.reshape(rows, cols), {"long_name": attrs["long_name"].format(
                "sample")}),
            "glt_line": (("ortho_y", "ortho_x"), gl.reshape(rows, cols), {"long_name": attrs["long_name"].format(
                "line")}),
            "glt_spatial_ref": ((), 0, spatial_ref_attrs("EPSG:4326", t))}


def pixel_transform(ds: xr.Dataset | xr.DataArray) -> tuple[Any, str | None]:
    """``(affine, crs_wkt)`` of a (line, sample) map, recovered from its ``x``/``y``
    coordinates (so cut or flipped maps are written where they are), else ``(None, None)``."""
    from affine import Affine

    if "x" in ds.coords and "y" in ds.coords and "spatial_ref" in ds.coords:
        x, y = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
        if x.size < 1 or y.size < 1:
            raise GridError("the map is empty")
        ref = ds["spatial_ref"].attrs
        gt = [float(v) for v in str(ref.get("GeoTransform", "0 1 0 0 0 -1")).split()]
        dx = float(np.median(np.diff(x))) if x.size > 1 else gt[1]
        dy = float(np.median(np.diff(y))) if y.size > 1 else gt[5]
        for vals, step, name in ((x, dx, "x"), (y, dy, "y")):
            if vals.size > 2 and not np.allclose(np.diff(vals), step, rtol=1e-6, atol=abs(step) * 1e-6):
                raise GridError(f"the {name} coordinates of the map are not regular; cannot write it as a GeoTIFF")
        return Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2), ref["crs_wkt"]
    return None, None


def write_pixel_cog(ds: xr.Dataset, variables: list[str], path: str | os.PathLike[str],
                    tags: dict[str, Any] | None = None) -> str:
    """Write (line, sample) variables as the bands of a Cloud-Optimized GeoTIFF.

    The georeference comes from the ``x``/``y`` coordinates and ``spatial_ref``; a map
    without them is written on its bare pixel grid (row = line, column = sample).
    """
    import rasterio
    import rasterio.shutil
    from rasterio.errors import NotGeoreferencedWarning

    target = Path(path)
    transform, crs = pixel_transform(ds)
    arrays = [np.asarray(ds[v].values) for v in variables]
    dtype = np.result_type(*arrays)
    dtype = np.float32 if dtype.kind == "f" else dtype
    nodata = np.nan if np.dtype(dtype).kind == "f" else 0
    rows, cols = arrays[0].shape
    tmp = temp_path(target, "cog")
    profile = {"driver": "COG", "width": cols, "height": rows, "count": len(arrays), "dtype": np.dtype(dtype).name,
               "nodata": nodata, "compress": "DEFLATE", "blocksize": 512, "overviews": "AUTO",
               "BIGTIFF": "IF_SAFER"}
    if transform is not None:
        profile.update(transform=transform, crs=rasterio.crs.CRS.from_wkt(crs))
    else:
        warn(f"{target}: the cube has no map information or lookup table; writing on the bare pixel grid (no CRS)")
    try:
        mem = rasterio.MemoryFile()
        gtiff = dict(profile, driver="GTiff")
        for key in ("blocksize", "overviews", "BIGTIFF", "compress"):
            gtiff.pop(key, None)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with mem.open(**gtiff) as dst:
                for i, (arr, name) in enumerate(zip(arrays, variables, strict=True), start=1):
                    dst.write(arr.astype(dtype), i)
                    dst.set_band_description(i, name)
                    attrs = ds[name].attrs
                    dst.update_tags(i, **{k: str(attrs[k]) for k in ("units", "long_name") if k in attrs})
                dst.update_tags(**{k: str(v) for k, v in {**ds.attrs, **(tags or {})}.items()})
            with mem.open() as src:
                rasterio.shutil.copy(src, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
                                     OVERVIEWS="AUTO", BIGTIFF="IF_SAFER")
        os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one OutputError line
        raise write_failed(target, "GeoTIFF", exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(target)


def _write_text(path: Path, text: str) -> None:
    tmp = temp_path(path, "txt")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, "table", exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _quicklook(ds: xr.Dataset, table: Any, labels: np.ndarray, path: Path, variable: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = np.asarray(ds[variable].values, float)
    finite = e[np.isfinite(e)]
    vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    if len(table):  # show the plumes' range, not only the noise
        vmax = max(vmax, 0.8 * float(table["max_ppm_m"].max()))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    im = ax.imshow(e, cmap="inferno", vmin=0, vmax=max(vmax, 1.0), interpolation="nearest")
    if labels.max() > 0:
        ax.contour(labels > 0, levels=[0.5], colors="cyan", linewidths=1.0)
        for _, row in table.iterrows():
            ax.annotate(f"{int(row.plume_id)}", (row["sample"], row["line"]), color="cyan", fontsize=8)
    label = "CH4 enhancement, albedo-corrected (ppm m)" if variable.endswith("albedo_corrected") else \
        "CH4 enhancement (ppm m)"
    fig.colorbar(im, ax=ax, label=label, shrink=0.8)
    title = Path(str(ds.attrs.get("source_file", ""))).name
    ax.set_title(f"{title}\n{len(table)} plume(s), noise {table.attrs.get('noise_ppm_m', float('nan')):.0f} ppm m",
                 fontsize=9)
    ax.set_xlabel("sample")
    ax.set_ylabel("line")
    tmp = temp_path(path, "png")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, "quicklook", exc) from exc
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def run_plumes(
    radiance: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fwhm_nm: Any = None,
    wind_speed: float | None = None,
    wind_speed_uncertainty: float | None = None,
    sensor: str | None = None,
    threshold: float | None = None,
    passes: int = 2,
    window_nm: tuple[float, float] = (2100.0, 2450.0),
    ueff: tuple[float, float] | None = None,
    grid: Any = None,
    scheduler: Any = None,
    prefix: str = "",
    albedo_correction: bool = True,
) -> dict[str, Any]:
    """Run the plume stage on one cube; returns ``{"outputs": [...], "plumes": GeoDataFrame, ...}``.

    ``grid`` (a :class:`~eo_pipeline.GridSpec` or registered name) also writes the
    enhancement averaged onto that grid (``ch4_enhancement_<grid>.tif``, the mean of the
    pixels whose centres fall in each cell). ``prefix`` starts every file name (a job
    writes ``<scene>_ch4_enhancement.tif``...). ``time`` in the result is the scene's
    acquisition time (ISO 8601 UTC) where the product or its file name gives it.

    The plume masks, the table, the quicklook and the ``grid`` map use the albedo-corrected
    enhancement (``albedo_correction=False``: the plain one): a plume absorbs in proportion
    to the radiance of the pixel it is over, so the plain filter reads plumes over dark
    ground low and over bright ground high (on the real AVIRIS-NG cube, a planted plume
    moved over 35 places is recovered to 0.72-1.10 of its mean plainly, 0.89-1.02
    albedo-corrected). Both COGs are always written.
    """
    import dask

    from .matched_filter import ch4_matched_filter
    from .plumes import find_plumes
    from .readers.radiance import open_radiance

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cube = open_radiance(radiance, fwhm_nm=fwhm_nm)
    lazy = ch4_matched_filter(cube, passes=passes, window_nm=window_nm)
    keep = [v for v in lazy.data_vars if lazy[v].dims == ("line", "sample")]
    with dask.config.set(scheduler=scheduler) if scheduler else _null():
        (computed,) = dask.compute(lazy[keep])
    result = computed
    for name in ("glt_sample", "glt_line"):
        if name in lazy:
            result[name] = lazy[name]
    if "x" not in result.coords and "glt_sample" not in result and "lon" in result.coords:
        glt = lookup_table(result["lon"].values, result["lat"].values)
        ref = glt.pop("glt_spatial_ref")
        result = result.assign(**glt).assign_coords(glt_spatial_ref=ref)
    if "x" not in result.coords and "glt_sample" in result:
        result = orthorectify(result)
    else:
        result = result.drop_vars([v for v in ("glt_sample", "glt_line") if v in result])
    sensor = sensor or cube.attrs.get("instrument")
    variable = "ch4_enhancement_albedo_corrected" if albedo_correction else "ch4_enhancement"
    table, labels = find_plumes(result, threshold=threshold, wind_speed=wind_speed, sensor=sensor,
                                wind_speed_uncertainty=wind_speed_uncertainty, ueff=ueff, return_labels=True,
                                variable=variable)
    result["plume_mask"] = (("line", "sample"), labels.astype(np.uint16),
                            {"long_name": "plume id (0 = background)", "units": "1"})
    when = str(cube.attrs.get("time", ""))
    tags = {"source_file": cube.attrs.get("source_file", ""), "instrument": cube.attrs.get("instrument", ""),
            "fwhm_source": cube["fwhm"].attrs.get("source", ""), "title": f"CH4 plumes of {Path(radiance).name}",
            "noise_ppm_m": f"{table.attrs['noise_ppm_m']:.3f}", "units": "ppm m"}
    if when:
        tags["time_coverage_start"] = tags["time_coverage_end"] = when
    written = []
    for name, variables in _MAPS.items():
        written.append(write_pixel_cog(result, variables, out / f"{prefix}{name}", tags))
    written.append(write_pixel_cog(result, ["plume_mask"], out / f"{prefix}plume_mask.tif", tags))
    frame = table.drop(columns="geometry")
    _write_text(out / f"{prefix}plumes.csv", frame.to_csv(index=False))
    _write_text(out / f"{prefix}plumes.geojson", table.to_json(drop_id=True))
    written += [str(out / f"{prefix}plumes.csv"), str(out / f"{prefix}plumes.geojson")]
    _quicklook(result, table, labels, out / f"{prefix}quicklook.png", variable)
    written.append(str(out / f"{prefix}quicklook.png"))
    if grid is not None:
        written.append(_write_on_grid(result, grid, out, prefix, tags, variable))
    return {"outputs": written, "plumes": table, "result": result, "noise_ppm_m": table.attrs["noise_ppm_m"],
            "seconds": time.perf_counter() - t0, "time": when}


def _write_on_grid(result: xr.Dataset, grid: Any, out: Path, prefix: str, tags: dict[str, Any],
                   variable: str) -> str:
    """The enhancement averaged onto a grid of the gridding stage (pixel centres binned)."""
    from .grid import GridSpec, named_grid

    spec = grid if isinstance(grid, GridSpec) else named_grid(str(grid))
    from .plumes import _to_lonlat

    rows, cols = np.indices(result[variable].shape)
    lon, lat = _to_lonlat(result, rows.ravel(), cols.ravel())
    x, y = spec.lonlat_to_xy(np.asarray(lon), np.asarray(lat))
    r, c = spec.rowcol(np.asarray(x), np.asarray(y))
    v = np.asarray(result[variable].values, float).ravel()
    ok = np.isfinite(v) & (r >= 0) & (c >= 0)
    flat = r[ok].astype(np.int64) * spec.shape[1] + c[ok]
    total = np.bincount(flat, weights=v[ok], minlength=spec.shape[0] * spec.shape[1])
    count = np.bincount(flat, minlength=spec.shape[0] * spec.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total / count).reshape(spec.shape).astype(np.float32)
    ds = xr.Dataset({variable: (("y", "x"), mean, {"units": "ppm m", "grid_mapping": "spatial_ref"})},
                    coords=spec.coords())
    ds.coords["spatial_ref"] = ((), 0, spec.cf_grid_mapping())
    from .io.geotiff import write_cog

    name = spec.name or "grid"
    return str(write_cog(ds, out / f"{prefix}ch4_enhancement_{name}.tif", tags=tags))


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
