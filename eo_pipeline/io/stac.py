# SPDX-License-Identifier: Apache-2.0
"""STAC catalogue of an output folder (pystac): one item per species and time step.

Written at the end of every ``eo-pipeline run`` from the folder's manifest
(:mod:`eo_pipeline.manifest`) and the maps' own headers, so it describes every output
in the folder, those of earlier runs included:

* ``collection.json``: a STAC Collection (spatial and temporal extent of all items);
* ``stac/<item>/<item>.json``: one Item per species and time step (daily or monthly
  composites), or per map of a single-map job and per forest map, with ``datetime`` (the
  start) and ``start_datetime``/``end_datetime`` (the period, inclusive), ``bbox`` and
  ``geometry`` in longitude/latitude (the grid's outline, densified, in any CRS), the
  projection extension (``proj:code`` where the CRS has one, else ``proj:wkt2``;
  ``proj:shape``, ``proj:transform``, ``proj:bbox``) and provenance in the properties:
  the inputs (path, size, modification time), the processor versions, the
  configuration hash and the software (processing extension);
* assets: ``map`` and ``anomaly`` (the multi-band COGs, role ``data``, raster
  extension with data type, nodata and units per band), one single-band asset per
  statistic (``xch4_mean``, ``xch4_anomaly``...: a small VRT next to the item that
  reads that band of the COG, for loaders that take one band per asset, as stackstac
  does; GDAL's Virtual Format has no registered media type, so these assets give none),
  ``overview`` / ``anomaly_overview`` (the quicklooks), ``netcdf`` (the CF-NetCDF
  stack), ``hotspots`` / ``hotspots_table`` and ``regions`` (the tables).

Hrefs are relative (a self-contained catalogue): the folder can be moved or served
as it is. Load the maps back with ``odc.stac.load(items, bands=["xch4_mean"])`` or
``stackstac.stack([i.make_asset_hrefs_absolute() for i in items], assets=["xch4_mean"], epsg=4326)``
(stackstac opens asset hrefs as they are and reads the v1 ``proj:epsg`` only).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

__all__ = ["write_catalog", "COLLECTION", "ITEMS_DIR"]

COLLECTION = "collection.json"
ITEMS_DIR = "stac"
#: GDAL's Virtual Format has no registered media type: the band assets give none (STAC allows it), so
#: loaders go by their role ("data") and raster metadata.
VRT_TYPE = None
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
#: Asset key, title and roles of each kind of output in an item.
_ROLES = {"map": ("map", "Level-3 map (Cloud-Optimized GeoTIFF)", ["data"]),
          "anomaly": ("anomaly", "background, anomaly and z-score (Cloud-Optimized GeoTIFF)", ["data"]),
          "overview": ("overview", "quicklook of the mean", ["overview"]),
          "anomaly_overview": ("anomaly_overview", "quicklook of the anomaly", ["overview"]),
          "netcdf": ("netcdf", "CF-1.8 NetCDF of every time step", ["data"]),
          "regions": ("regions", "per-region table", ["metadata"]),
          "enhancement": ("enhancement", "CH4 enhancement and its uncertainty, ppm m (COG)", ["data"]),
          "enhancement_albedo": ("enhancement_albedo_corrected",
                                 "albedo-corrected CH4 enhancement and its uncertainty, ppm m (COG)", ["data"]),
          "plume_mask": ("mask", "plume ids, 0 = background (COG)", ["data"]),
          "enhancement_grid": ("enhancement_on_grid", "CH4 enhancement averaged onto a grid (COG)", ["data"]),
          "plumes": ("plumes", "plume outlines with IME and emission rates (GeoJSON)", ["data"]),
          "plumes_table": ("plumes_table", "plume table (CSV)", ["metadata"]),
          "table": ("table", "table", ["metadata"])}
_TYPES = {".tif": "image/tiff; application=geotiff; profile=cloud-optimized", ".png": "image/png",
          ".nc": "application/netcdf", ".csv": "text/csv", ".geojson": "application/geo+json"}


def _dt(text: str) -> Any:
    import datetime as dt

    text = (text or "").strip()
    if not text:
        return None
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _outline(crs: Any, bounds: tuple[float, float, float, float]) -> tuple[list[float], dict[str, Any]]:
    """Bbox and Polygon geometry in lon/lat of a grid's outline (edges densified, so curved edges are followed)."""
    from pyproj import CRS, Transformer

    west, south, east, north = bounds
    n = 21
    up, down = np.linspace(0.0, 1.0, n), np.linspace(1.0, 0.0, n)
    xs = west + (east - west) * np.concatenate([up, np.ones(n), down, np.zeros(n)])
    ys = south + (north - south) * np.concatenate([np.zeros(n), up, np.ones(n), down])
    src = CRS.from_user_input(crs)
    if src.is_geographic and src.to_epsg() == 4326:
        lon, lat = xs, ys
    else:
        lon, lat = Transformer.from_crs(src, "EPSG:4326", always_xy=True).transform(xs, ys)
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    bbox = [float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())]
    if src.is_geographic:  # a lon/lat grid's outline is its box
        ring = [[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]], [bbox[0], bbox[1]]]
    else:
        ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
        ring.append(ring[0])
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def _band_vrt(cog: Path, band: int, vrt: Path, final_dir: Path, width: int, height: int, crs_wkt: str,
              transform: tuple[float, ...]) -> None:
    """Write a one-band VRT reading band ``band`` of ``cog`` by a path relative to ``final_dir`` (where it lives)."""
    rel = os.path.relpath(cog, final_dir)
    gt = ", ".join(repr(float(v)) for v in (transform[2], transform[0], transform[1], transform[5], transform[3],
                                                transform[4]))
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(crs_wkt)}</SRS><GeoTransform>{gt}</GeoTransform>"
            '<VRTRasterBand dataType="Float32" band="1"><NoDataValue>nan</NoDataValue>'
            f'<SimpleSource><SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource>'
            "</VRTRasterBand></VRTDataset>\n")
    vrt.write_text(text)


def _cog_assets(cog: Path, key: str, title: str, roles: list[str], final_dir: Path, stage_dir: Path,
                seen_bands: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the COG asset and its one-band assets (VRTs written to ``stage_dir``), and the map's grid facts."""
    import pystac
    import rasterio
    from pyproj import CRS
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    with rasterio.open(cog) as src:
        crs, transform, shape, bounds = src.crs, src.transform, (src.height, src.width), tuple(src.bounds)
        tags = src.tags()
        names = [d or f"band_{k + 1}" for k, d in enumerate(src.descriptions)]
        band_tags = [src.tags(k + 1) for k in range(src.count)]
        dtypes = src.dtypes
    epsg = crs.to_epsg()
    wkt = CRS.from_user_input(crs.to_wkt()).to_wkt()  # WKT2 (2019), as proj:wkt2 asks

    def describe(asset: pystac.Asset, idx: list[int]) -> pystac.Asset:
        ProjectionExtension.ext(asset).apply(
            code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else wkt, shape=list(shape),
            transform=list(transform)[:6], bbox=list(bounds))
        RasterExtension.ext(asset).bands = [
            RasterBand.create(data_type=DataType(dtypes[k]), nodata="nan", unit=band_tags[k].get("units") or None)
            for k in idx]
        return asset

    assets = {key: (pystac.Asset(str(cog), title=title, media_type=_TYPES[".tif"], roles=roles,
                                 extra_fields={"description": "bands: " + ", ".join(names)}), list(range(len(names))))}
    for k, name in enumerate(names):
        if name in seen_bands:  # the same band in two COGs (the count): one asset is enough
            continue
        seen_bands.add(name)
        _band_vrt(cog, k + 1, stage_dir / f"{name}.vrt", final_dir, shape[1], shape[0], wkt, tuple(transform))
        assets[name] = (pystac.Asset(str(final_dir / f"{name}.vrt"), title=band_tags[k].get("long_name", name),
                                     media_type=VRT_TYPE, roles=["data"],
                                     extra_fields={"description": f"band {k + 1} of {cog.name}"}), [k])
    facts = {"crs": crs, "bounds": bounds, "tags": tags}
    return {k: describe(a, idx) for k, (a, idx) in assets.items()}, facts


def _entry_assets(folder: Path, files: list[tuple[str, Mapping[str, Any]]], taken: Mapping[str, Any]) -> dict[str, Any]:
    """Assets of the item's other files (quicklooks) or of the species' shared ones (NetCDF, tables)."""
    import pystac

    out: dict[str, Any] = {}
    for n, e in files:
        kind = str(e.get("kind", ""))
        key, title, roles = _ROLES.get(kind, (Path(n).stem, "output", ["metadata"]))
        if kind == "hotspots":
            key, title, roles = ("hotspots", "hotspot outlines", ["data"]) if n.endswith(".geojson") else (
                "hotspots_table", "hotspot table", ["metadata"])
        if key in taken or key in out:
            key = Path(n).stem
        out[key] = pystac.Asset(str(folder / n), title=title, media_type=_TYPES.get(Path(n).suffix), roles=roles)
    return out


def _item(folder: Path, stage: Path, item_id: str, files: list[tuple[str, Mapping[str, Any]]],
          shared: list[tuple[str, Mapping[str, Any]]], job: str, config_hash: str) -> Any:
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    cogs = sorted(((n, e) for n, e in files if n.endswith(".tif")),
                  key=lambda c: c[1].get("kind") not in ("map", "enhancement"))
    final_dir = folder / ITEMS_DIR / item_id
    stage_dir = stage / ITEMS_DIR / item_id
    stage_dir.mkdir(parents=True)
    seen: set[str] = set()
    assets: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for n, e in cogs:
        key, title, roles = _ROLES.get(str(e.get("kind")), ("map", "map", ["data"]))
        got, f = _cog_assets(folder / n, key if key not in assets else Path(n).stem, title, roles, final_dir,
                             stage_dir, seen)
        assets.update(got)
        facts = facts or f
    assets.update(_entry_assets(folder, [(n, e) for n, e in files if not n.endswith(".tif")], assets))
    assets.update(_entry_assets(folder, shared, assets))
    first = cogs[0][1]
    tags = facts["tags"]
    start = _dt(str(first.get("start") or tags.get("time_coverage_start", "")))
    end = _dt(str(first.get("end") or tags.get("time_coverage_end", "")))
    if start is None and tags.get("year"):  # forest maps: their year
        start, end = _dt(f"{tags['year']}-01-01T00:00:00Z"), _dt(f"{tags['year']}-12-31T23:59:59Z")
    bbox, geometry = _outline(facts["crs"], facts["bounds"])
    props: dict[str, Any] = {
        "title": tags.get("title", item_id),
        "eo_pipeline:species": str(first.get("species", "")),
        "eo_pipeline:job": first.get("job", job),
        "eo_pipeline:config_hash": first.get("config_hash", config_hash),
        "eo_pipeline:inputs": [dict(i) for i in first.get("inputs", [])],
        "eo_pipeline:processor_versions": tags.get("processor_versions", ""),
        "eo_pipeline:source": tags.get("source", ""),
        "processing:software": {"eo_pipeline": str(first.get("software", "")).replace("eo_pipeline ", "")},
    }
    for k in ("method", "weighting", "composite_period", "anomaly_method", "grid", "units"):
        if tags.get(k):
            props[f"eo_pipeline:{k}"] = tags[k]
    if start is not None:
        props["start_datetime"] = _iso(start)
        props["end_datetime"] = _iso(end or start)
    item = pystac.Item(item_id, geometry, bbox, start, props, stac_extensions=[PROCESSING])
    ProjectionExtension.add_to(item)
    RasterExtension.add_to(item)
    for key, a in assets.items():
        item.add_asset(key, a)
    return item


def _iso(t: Any) -> str:
    return t.isoformat().replace("+00:00", "Z")


def write_catalog(out_dir: str | os.PathLike[str], outputs: Mapping[str, Mapping[str, Any]], *,
                  job: str, config_hash: str) -> Path:
    """Write the folder's STAC collection and items (replacing the previous ones); returns ``collection.json``.

    Parameters
    ----------
    out_dir : path
        The output folder.
    outputs : mapping
        The manifest's entries (file name relative to the folder -> entry with ``kind``,
        ``item``, ``species``, ``start``, ``end``, ``inputs``, ``config_hash``, ``software``).
    job, config_hash : str
        The job's name (the collection's id) and configuration hash.

    Returns
    -------
    pathlib.Path
        ``out_dir/collection.json``. The items are in ``out_dir/stac/<item>/``; the
        catalogue is built in a hidden folder and then moved into place.
    """
    import datetime as dt

    import pystac
    from pystac.layout import TemplateLayoutStrategy

    folder = Path(out_dir)
    stage = folder / f".{ITEMS_DIR}-new"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        by_item: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        shared: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        for name, e in sorted(outputs.items()):
            if not (folder / name).exists():
                continue
            target = by_item.setdefault(str(e["item"]), []) if e.get("item") else shared.setdefault(
                str(e.get("species", "")), [])
            target.append((name, e))
        items = [_item(folder, stage, item_id, files, shared.get(str(files[0][1].get("species", "")), []), job,
                       config_hash)
                 for item_id, files in sorted(by_item.items()) if any(n.endswith(".tif") for n, _ in files)]
        if items:
            boxes = np.array([i.bbox for i in items], float)
            spatial = [[float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                        float(boxes[:, 3].max())]]
            starts = [_dt(i.properties.get("start_datetime", "")) or i.datetime for i in items]
            ends = [_dt(i.properties.get("end_datetime", "")) or i.datetime for i in items]
            temporal = [[min(t for t in starts if t), max(t for t in ends if t)]]
        else:
            spatial, temporal = [[-180.0, -90.0, 180.0, 90.0]], [[dt.datetime.now(dt.UTC), None]]
        collection = pystac.Collection(
            id=job, title=f"eo_pipeline job {job}",
            description=f"Outputs of the eo_pipeline job {job!r} (config hash {config_hash}): Level-3 maps, "
                        "anomalies, quicklooks and tables; one item per species and time step.",
            extent=pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent(temporal)),
            license="other", extra_fields={"eo_pipeline:config_hash": config_hash})
        collection.add_items(items)
        collection.normalize_hrefs(str(folder), strategy=TemplateLayoutStrategy(item_template=f"{ITEMS_DIR}/${{id}}"))
        collection.make_all_asset_hrefs_relative()
        collection.save(pystac.CatalogType.SELF_CONTAINED, dest_href=str(stage))
        final = folder / ITEMS_DIR
        old = folder / f".{ITEMS_DIR}-old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        if (stage / ITEMS_DIR).exists():
            os.replace(stage / ITEMS_DIR, final)
        os.replace(stage / COLLECTION, folder / COLLECTION)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder / COLLECTION
