# SPDX-License-Identifier: Apache-2.0
"""Job configuration: YAML (``yaml.safe_load``) validated into typed models.

Defaults live here and only here. Relative paths in a config file are resolved
against the directory of that file, so a job runs the same from any working
directory. Errors name the file and the dotted path of the bad key.

Example (``configs/demo.yaml``)::

    name: demo
    inputs: ["../sample_scenes/*.nc", "../sample_scenes/*.nc4"]
    qa_threshold: null          # each product's documented default
    gridding:
      grid: north_china_0p1     # a named grid (eo-pipeline grids), or {crs, bbox, resolution}
      method: point
    output:
      dir: ../outputs/demo
      formats: [geotiff, quicklook]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, GridError
from .grid import GridSpec, grid_from_mapping, named_grid

__all__ = ["JobConfig", "GridConfig", "GriddingConfig", "AnomalyConfig", "HotspotConfig", "RegionsConfig",
           "ForestConfig", "PlumesConfig", "OutputConfig", "ClusterConfig", "load_config", "config_hash"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridConfig(_Model):
    """An inline grid: ``{crs, bbox, resolution}`` (units of the CRS)."""

    crs: str = "EPSG:4326"
    bbox: tuple[float, float, float, float]
    resolution: float | tuple[float, float]
    description: str = ""

    @field_validator("resolution")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        values = v if isinstance(v, tuple) else (v,)
        if any(r <= 0 for r in values):
            raise ValueError("must be > 0")
        return v


#: A statistic of a Level-3 map (``num_samples``: the srf method's only).
Statistic = Literal["mean", "std", "count", "weight", "min", "max", "uncertainty", "num_samples"]


class GriddingConfig(_Model):
    """The gridding stage."""

    grid: str | GridConfig = Field(description="a named grid (built-in, user grids files or `grids:`) or an inline grid")
    method: Literal["point", "area", "srf"] = Field(
        "area", description="area (exact footprint overlap), point (pixel centres) or srf (physics-based "
                            "oversampling, Sun et al. 2018; adds num_samples)")
    srf_shape: tuple[float, float, float] | str | None = Field(
        None, description="srf method: SRF shape k1, k2, k3 or an instrument name (default: each product's instrument)")
    srf_window: float = Field(1.5, gt=0, description="srf method: window factor (cells within ceil(extent/2/cell x F))")
    weighting: Literal["inverse_variance"] | None = None
    composite: Literal["day", "month"] | None = None
    no_corners: Literal["fov", "point"] = "fov"
    fov_diameter_km: float | None = Field(None, gt=0)
    min_weight: float = Field(0.0, ge=0.0)
    statistics: tuple[Statistic, ...] | Literal["all"] = (
        Field(("mean", "count", "weight"), description="statistics to write (default mean, count, weight; 'all')"))
    chunk: int | None = Field(None, ge=512, le=16384, multiple_of=512)


class AnomalyConfig(_Model):
    """The anomaly stage (see :func:`eo_pipeline.regional_anomaly`)."""

    method: Literal["daily_median", "moving_median", "climatology"] = "daily_median"
    regions: str | list[dict[str, Any]] = "hakkarainen2016"
    zscore: bool = True
    radius_km: float = Field(100.0, gt=0)
    min_count: int = Field(3, ge=1)
    overrides: dict[Literal["xch4", "xco2", "xco"], dict[str, Any]] = Field(
        default_factory=dict, description="per-species replacements of the settings above")

    def for_species(self, name: str) -> dict[str, Any]:
        """Keyword arguments of regional_anomaly for one species."""
        base = self.model_dump(exclude={"overrides"})
        base.update(self.overrides.get(name, {}))  # type: ignore[call-overload]
        unknown = set(base) - {"method", "regions", "zscore", "radius_km", "min_count"}
        if unknown:
            raise ConfigError(f"anomaly.overrides.{name}: unknown setting(s) {sorted(unknown)}")
        return base


class HotspotConfig(_Model):
    """The hotspot stage (see :func:`eo_pipeline.find_hotspots`); null = the documented defaults."""

    threshold: float | None = None
    min_area_km2: float | None = Field(None, ge=0)
    min_soundings: int | None = Field(None, ge=0)
    opening: int | None = Field(None, ge=0)


class RegionsConfig(_Model):
    """Per-region tables (see :func:`eo_pipeline.region_table`)."""

    file: Path
    name_field: str | None = None


class ForestConfig(_Model):
    """The forest-carbon stage (see :func:`eo_pipeline.forest_stage.run_forest`).

    Paths (or lists of tile paths / glob patterns) are relative to the config file.
    """

    treecover: str | list[str] = Field(description="Hansen treecover2000 tile(s) or a land-cover class raster")
    lossyear: str | list[str] | None = None
    emissions: str | list[str] | None = Field(None, description="GFW gross emissions tile(s), Mg CO2e per pixel")
    gain: str | list[str] | None = None
    biomass: str | list[str] | None = Field(None, description="above-ground biomass density tile(s), t d.m./ha")
    landcover: str | list[int] | None = Field(None, description="worldcover, lc100 or a list of forest classes")
    regions: Path | None = Field(None, description="region polygons (default: the whole raster)")
    name_field: str | None = None
    select: list[str] | None = Field(None, description="only these regions")
    grid: str | GridConfig | None = Field(None, description="per-cell maps on this grid (default: none)")
    min_cover: float = Field(30.0, ge=0.0, le=100.0, description="canopy cover %% for forest")
    min_size: float | str = Field(0.0, description="minimum patch area: ha, or '7.5 mu' / '0.1 km2'")
    years: str | list[int] | None = Field(None, description="e.g. 2000-2023 (default: 2000 to the last loss year)")
    map_year: int | None = None
    cell_area: Literal["ellipsoid", "sphere"] = "ellipsoid"
    emissions_weighting: Literal["fraction", "none"] = "fraction"
    removal_factors: Path | None = Field(None, description="your table, merged over the IPCC 2019 defaults")
    zone: str | None = Field(None, description="zone key of the removal-factor table")
    removal_factor: float | dict[str, Any] | None = Field(
        None, description="your own factor: t C/ha/yr, or {value, low, high, units, source}")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stem: str = Field("forest", description="file-name stem of the forest outputs (a plain name)")

    @field_validator("stem")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or v in (".", "..") or "/" in v or "\\" in v or "\0" in v or Path(v).is_absolute():
            raise ValueError("must be a plain file name (no '/', '..' or absolute path): outputs stay in output.dir")
        return v


class PlumesConfig(_Model):
    """The plume stage (see :func:`eo_pipeline.run_plumes`): hyperspectral radiance cubes to plume maps.

    Paths are relative to the config file. Each scene writes ``<scene>_ch4_enhancement.tif``,
    ``<scene>_ch4_enhancement_albedo_corrected.tif``, ``<scene>_plume_mask.tif``,
    ``<scene>_plumes.csv``, ``<scene>_plumes.geojson`` and ``<scene>_quicklook.png``.
    """

    inputs: tuple[str, ...] = Field(min_length=1, description="radiance cubes (ENVI data files, EMIT L1B) or globs")
    fwhm_nm: float | None = Field(None, gt=0, description="band FWHM where the product has none, nm")
    wind_speed: float | None = Field(None, ge=0, description="10 m wind speed, m/s (none: IME only)")
    wind_speed_uncertainty: float | None = Field(None, ge=0, description="1-sigma, m/s (default 50%% of it)")
    sensor: str | None = Field(None, description="U_eff calibration row (default: the cube's instrument)")
    ueff: tuple[float, float] | None = Field(None, description="(a, b) of U_eff = a + b U10 instead of the table's")
    threshold: float | None = Field(None, gt=0, description="plume mask threshold, ppm m (default 2 x noise)")
    passes: int = Field(2, ge=1, le=10)
    window_nm: tuple[float, float] = (2100.0, 2450.0)
    grid: str | GridConfig | None = Field(None, description="also average the enhancement onto this grid")
    albedo_correction: bool = Field(True, description="plumes from the albedo-corrected enhancement (else plain)")


class OutputConfig(_Model):
    """Where and what to write."""

    dir: Path
    formats: tuple[Literal["geotiff", "netcdf", "quicklook"], ...] = ("geotiff", "quicklook")


class ClusterConfig(_Model):
    """Where a job computes (see :mod:`eo_pipeline.cluster`); ``eo-pipeline run --scheduler`` wins over it.

    Give one of: ``type: local`` (a LocalCluster of worker processes on this machine),
    ``address: tcp://HOST:PORT`` or ``scheduler_file: FILE.json`` (a running dask
    scheduler), or ``type: slurm`` / ``type: pbs`` (batch jobs through dask-jobqueue).
    """

    type: Literal["local", "slurm", "pbs"] | None = None
    address: str | None = Field(None, pattern=r"^[a-z]+://.+")
    scheduler_file: str | None = None
    # local cluster
    workers: int = Field(2, ge=1, description="local: worker processes")
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | int | None = Field("auto", description="per worker, e.g. '4GB'; 'auto' shares the RAM")
    # dask-jobqueue (per job)
    jobs: int = Field(1, ge=1, description="slurm/pbs: batch jobs to submit")
    cores: int = Field(1, ge=1, description="slurm/pbs: cores per job")
    memory: str = Field("4GB", description="slurm/pbs: memory per job")
    processes: int = Field(1, ge=1, description="slurm/pbs: dask worker processes per job")
    walltime: str = Field("01:00:00", pattern=r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")
    queue: str | None = None
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    local_directory: str | None = None
    interface: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ClusterConfig:
        given = [k for k in ("type", "address", "scheduler_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of type (local, slurm, pbs), address or scheduler_file"
                             + (f"; got {', '.join(given)}" if given else ""))
        return self

    def jobqueue_options(self) -> dict[str, Any]:
        """Keyword arguments of dask-jobqueue's cluster class (plus ``jobs``)."""
        return {"jobs": self.jobs, "cores": self.cores, "memory": self.memory, "processes": self.processes,
                "walltime": self.walltime, "queue": self.queue, "account": self.account,
                "job_extra_directives": list(self.job_extra_directives),
                "job_script_prologue": list(self.job_script_prologue),
                "local_directory": self.local_directory, "interface": self.interface}


class JobConfig(_Model):
    """A whole job: inputs, reading options, stages, outputs."""

    name: str = "job"
    inputs: tuple[str, ...] = Field((), description="Level-2 files or glob patterns (may be empty with plumes:)")
    qa_threshold: float | None = Field(None, ge=0.0, le=1.0)
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="an unreadable input stops the job (fail) or is skipped and listed in job_summary.json")
    reader_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grids: dict[str, GridConfig] = Field(default_factory=dict)
    gridding: GriddingConfig
    anomaly: AnomalyConfig | None = None
    hotspots: HotspotConfig | None = None
    regions: RegionsConfig | None = None
    forest: ForestConfig | None = None
    plumes: PlumesConfig | None = None
    output: OutputConfig
    cluster: ClusterConfig | None = None
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, p: str | Path) -> Path:
        """Resolve a path from the config against the config file's directory."""
        q = Path(p).expanduser()
        return (q if q.is_absolute() else (self.base_dir / q)).resolve()

    def forest_paths(self, value: str | list[str]) -> list[str]:
        """Tile paths of a forest layer, globs expanded, relative to the config file."""
        import glob

        out: list[str] = []
        for item in [value] if isinstance(value, str) else value:
            q = str(self.resolve(item))
            out += sorted(glob.glob(q)) if glob.has_magic(q) else ([q] if Path(q).exists() else [])
        return out

    def plume_paths(self) -> list[Path]:
        """The plume stage's radiance cubes, globs expanded (``.hdr`` files stand for their data files)."""
        import glob

        assert self.plumes is not None
        out: list[Path] = []
        for item in self.plumes.inputs:
            q = str(self.resolve(item))
            found = sorted(glob.glob(q)) if glob.has_magic(q) else ([q] if Path(q).exists() else [])
            for f in found:
                p = Path(f)
                if p.suffix.lower() == ".hdr":
                    if p.with_suffix("").exists() and p.with_suffix("").suffix.lower() != ".hdr":
                        p = p.with_suffix("")
                    else:
                        continue
                if p not in out:
                    out.append(p)
        return out

    def _stage_grid(self, g: str | GridConfig | None, key: str) -> GridSpec | None:
        """A stage's own grid: a name (built-in, grids files or ``grids:``) or inline; None: none."""
        if g is None:
            return None
        extra = {n: grid_from_mapping(n, c.model_dump(), f"grids.{n}") for n, c in self.grids.items()}
        if isinstance(g, str):
            return named_grid(g, extra)
        return grid_from_mapping(key.partition(".")[0], g.model_dump(), key)

    def plume_grid(self) -> GridSpec | None:
        """The grid the plume maps are also averaged onto (None: none)."""
        assert self.plumes is not None
        return self._stage_grid(self.plumes.grid, "plumes.grid")

    def forest_grid(self) -> GridSpec | None:
        """The forest stage's map grid (None: no maps)."""
        assert self.forest is not None
        return self._stage_grid(self.forest.grid, "forest.grid")

    def grid_spec(self, where: str = "config") -> GridSpec:
        """The gridding stage's target grid."""
        extra = {n: grid_from_mapping(n, g.model_dump(), f"{where}: grids.{n}") for n, g in self.grids.items()}
        g = self.gridding.grid
        if isinstance(g, str):
            return named_grid(g, extra)
        return grid_from_mapping("inline", g.model_dump(), f"{where}: gridding.grid")


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "tuple", "none"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """Drop pydantic's union-member tags (``str``, ``GridConfig``, ...) from an error location."""
    out = []
    for item in loc:
        text = str(item)
        if isinstance(item, str) and (text in _TYPE_TAGS or text[:1].isupper() or "[" in text):
            continue
        out.append(text)
    return tuple(out)


def _format_error(path: str, exc: ValidationError) -> str:
    errors = sorted(exc.errors(), key=lambda e: -len(e["loc"]))
    reported: list[tuple[str, ...]] = []
    parts = []
    for err in errors:
        loc = _clean_loc(err["loc"])
        if any(r[: len(loc)] == loc for r in reported):
            continue  # a deeper error on the same key says more
        reported.append(loc)
        got = err.get("input")
        got_s = "" if isinstance(got, dict) else f", got {got!r}"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc) or '(top level)'}: {msg}{got_s}")
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return f"{path}: " + "; ".join(parts[:3]) + more


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a job configuration file.

    Raises
    ------
    ConfigError
        Naming the file and the dotted key, e.g.
        ``demo.yaml: gridding.grid.resolution: must be > 0, got -0.1``.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file; see configs/demo.yaml for an example")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level")
    try:
        cfg = JobConfig.model_validate({**doc, "base_dir": p.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_format_error(str(p), exc)) from exc
    try:
        cfg.grid_spec(str(p))  # fail early on unknown or invalid grids
    except GridError as exc:
        raise ConfigError(f"{p}: gridding.grid: {exc}") from exc
    if cfg.hotspots is not None and cfg.anomaly is None:
        raise ConfigError(f"{p}: hotspots need an anomaly stage; add 'anomaly:' (e.g. method: daily_median)")
    if cfg.regions is not None and not cfg.resolve(cfg.regions.file).exists():
        raise ConfigError(f"{p}: regions.file: {cfg.resolve(cfg.regions.file)} does not exist")
    if cfg.forest is not None:
        _check_forest(cfg, p)
    if not cfg.inputs and cfg.plumes is None:
        raise ConfigError(f"{p}: inputs: give at least one Level-2 file or pattern (or a plumes: stage)")
    if cfg.plumes is not None:
        if not cfg.plume_paths():
            raise ConfigError(f"{p}: plumes.inputs: no file matches {list(cfg.plumes.inputs)}")
        try:
            cfg.plume_grid()
        except GridError as exc:
            raise ConfigError(f"{p}: plumes.grid: {exc}") from exc
    if cfg.anomaly is not None:
        for name in cfg.anomaly.overrides:
            cfg.anomaly.for_species(name)
    return cfg


def _check_forest(cfg: JobConfig, p: Path) -> None:
    f = cfg.forest
    assert f is not None
    for key in ("treecover", "lossyear", "emissions", "gain", "biomass"):
        value = getattr(f, key)
        if value is not None and not cfg.forest_paths(value):
            raise ConfigError(f"{p}: forest.{key}: no file matches {value}")
    for key in ("regions", "removal_factors"):
        value = getattr(f, key)
        if value is not None and not cfg.resolve(value).exists():
            raise ConfigError(f"{p}: forest.{key}: {cfg.resolve(value)} does not exist")
    if f.grid is not None:
        try:
            cfg.forest_grid()
        except GridError as exc:
            raise ConfigError(f"{p}: forest.grid: {exc}") from exc
    if f.zone is not None and f.removal_factor is not None:
        raise ConfigError(f"{p}: forest: give either zone (of the removal-factor table) or removal_factor, not both")


def config_hash(cfg: JobConfig) -> str:
    """SHA-256 (first 16 hex digits) of what the configuration asks to compute, for provenance tags.

    Where the job runs (``cluster:``) and where it writes (``output.dir``, ``--output``)
    do not change the maps, so they are left out: the same job gives the same hash (and
    the same files) on a workstation and on a cluster, into any folder.
    """
    doc = cfg.model_dump(mode="json", exclude={"cluster": True, "output": {"dir"}})
    if doc.get("plumes") is None:  # a job without the plume stage keeps the hash it had before the stage existed
        doc.pop("plumes", None)
    gridding = doc.get("gridding") or {}
    if gridding.get("method") != "srf":  # nor does a job of another method change hash with the srf settings
        gridding.pop("srf_shape", None)
        gridding.pop("srf_window", None)
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
