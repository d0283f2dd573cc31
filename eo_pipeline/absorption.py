# SPDX-License-Identifier: Apache-2.0
"""The CH4 target signature of the matched filter: a unit absorption spectrum per band.

Source
------
The absorption table is ``ch4.lut`` (with its ENVI header ``ch4.hdr``) shipped in the
wheel of **mag1c 1.2.0** (BSD-3-Clause, (c) 2019 Scientific Computing and Imaging
Institute and Utah Remote Sensing Applications Lab; Foote et al., "Fast and accurate
retrieval of methane concentration from imaging spectrometer data using sparsity prior",
IEEE TGRS 58(9), 6480-6492, 2020, doi:10.1109/TGRS.2020.2976888). It holds at-sensor
radiance spectra from 1399.6 to 2522.0 nm (31 800 samples, about 0.02-0.06 nm apart) for
seven CH4 enhancements of 0, 500, 1000, 2000, 4000, 8000 and 16 000 ppm m.

mag1c's wheel declares a dependency on torch (gigabytes), so it is never installed: the
wheel alone is fetched (``pip download mag1c==1.2.0 --no-deps``), its sha256 checked, and
the table read from inside the zip. :func:`absorption_table_path` looks, in order, at
``$EO_PIPELINE_CH4_LUT`` (the wheel, or a folder holding ``ch4.lut`` and ``ch4.hdr``), the
user cache folder, and otherwise downloads the wheel there (``eo-pipeline fetch-data``
does it ahead of time, ``make test``/``make demo`` run it at set-up).

Unit absorption
---------------
Each LUT spectrum is convolved with every band's Gaussian spectral response (centre and
FWHM in nm, responses normalised to unit sum), and the slope of ln(radiance) against the
enhancement (least squares over the seven levels) is the unit absorption ``k`` in
(ppm m)^-1: a radiance ``L0`` seen through an extra CH4 column ``a`` (ppm m) is
``L0 exp(k a)`` (Beer-Lambert), so ``dL/da = k L0`` near ``a = 0``; ``k`` is negative
in absorbing bands. (mag1c returns the same slope multiplied by 1e5.)
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import numpy as np

from .errors import EOPipelineError

__all__ = [
    "AbsorptionTableError",
    "LUT_ENHANCEMENTS_PPM_M",
    "MAG1C_WHEEL",
    "absorption_table_path",
    "fetch_absorption_table",
    "load_absorption_table",
    "unit_absorption",
]

#: The wheel that carries the table, and its sha256 (PyPI, mag1c 1.2.0).
MAG1C_WHEEL = "mag1c-1.2.0-py3-none-any.whl"
MAG1C_SHA256 = "52efb85d9f7391a451337a38ce7834fa5d3685c632eeaf85ce85797628f21bdf"
#: CH4 enhancements of the seven LUT spectra, ppm m (mag1c's ``generate_template_from_bands``).
LUT_ENHANCEMENTS_PPM_M = np.array([0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
ENV_VAR = "EO_PIPELINE_CH4_LUT"


class AbsorptionTableError(EOPipelineError, OSError):
    """The CH4 absorption table cannot be found, downloaded or read."""


def cache_dir() -> Path:
    """The user cache folder of eo_pipeline (``$EO_PIPELINE_CACHE`` or the OS's cache dir)."""
    env = os.environ.get("EO_PIPELINE_CACHE")
    if env:
        return Path(env)
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("eo_pipeline"))
    except ImportError:  # pragma: no cover - platformdirs is a core dependency
        return Path.home() / ".cache" / "eo_pipeline"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_absorption_table(folder: str | os.PathLike[str] | None = None, *, quiet: bool = True) -> Path:
    """Download the mag1c 1.2.0 wheel (without its dependencies) into ``folder``.

    Parameters
    ----------
    folder : path-like, optional
        Target folder (default: the user cache folder, see :func:`cache_dir`).
    quiet : bool
        Hide pip's output.

    Returns
    -------
    pathlib.Path
        The wheel, its sha256 checked.

    Raises
    ------
    AbsorptionTableError
        pip cannot reach a package index, or the file is not the published wheel.
    """
    target = Path(folder) if folder is not None else cache_dir()
    wheel = target / MAG1C_WHEEL
    if wheel.is_file() and _sha256(wheel) == MAG1C_SHA256:
        return wheel
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "mag1c==1.2.0", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(target)]
    if quiet:
        cmd.append("--quiet")
    try:
        proc = subprocess.run(cmd, capture_output=quiet, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AbsorptionTableError(f"{wheel}: cannot run pip to download the CH4 absorption table ({exc}); "
                                   f"download {MAG1C_WHEEL} by hand and set ${ENV_VAR} to it") from None
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise AbsorptionTableError(
            f"{wheel}: downloading the CH4 absorption table failed ({' '.join(last) or 'pip error'}); "
            f"run `pip download mag1c==1.2.0 --no-deps -d {target}` where a package index is reachable, "
            f"or set ${ENV_VAR} to the wheel")
    if _sha256(wheel) != MAG1C_SHA256:
        wheel.unlink()
        raise AbsorptionTableError(f"{wheel}: not the published mag1c 1.2.0 wheel (sha256 differs); removed, "
                                   "download it again")
    return wheel


def absorption_table_path(*, download: bool = True) -> Path:
    """Where the table is: ``$EO_PIPELINE_CH4_LUT``, the cache, or a fresh download."""
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if path.is_dir():
            path = path / "ch4.lut"
        if not path.exists():
            raise AbsorptionTableError(f"{path}: ${ENV_VAR} names no such file; point it to {MAG1C_WHEEL} "
                                       "or to a folder with ch4.lut and ch4.hdr")
        return path
    wheel = cache_dir() / MAG1C_WHEEL
    if wheel.is_file():
        return wheel
    if not download:
        raise AbsorptionTableError(f"{wheel}: the CH4 absorption table is not downloaded; "
                                   "run `eo-pipeline fetch-data`")
    return fetch_absorption_table()


def _header_value(text: str, key: str) -> str:
    m = re.search(rf"^\s*{re.escape(key)}\s*=\s*(\{{.*?\}}|[^\n]*)", text, flags=re.M | re.S | re.I)
    if m is None:
        raise AbsorptionTableError(f"ch4.hdr has no '{key}' key")
    return m.group(1).strip().strip("{}").strip()


def _read_pair(path: Path) -> tuple[str, bytes]:
    if path.suffix == ".whl":
        try:
            with zipfile.ZipFile(path) as z:
                return z.read("mag1c/ch4.hdr").decode("ascii"), z.read("mag1c/ch4.lut")
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise AbsorptionTableError(f"{path}: cannot read mag1c/ch4.lut from the wheel ({exc}); "
                                       "delete it and run `eo-pipeline fetch-data`") from None
    hdr = path.with_suffix(".hdr")
    try:
        return hdr.read_text(encoding="ascii"), path.read_bytes()
    except OSError as exc:
        raise AbsorptionTableError(f"{path}: cannot read the absorption table ({exc.strerror or exc})") from None


@cache
def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    text, raw = _read_pair(Path(path))
    try:
        bands = int(_header_value(text, "bands"))
        samples = int(_header_value(text, "samples"))
        lines = int(_header_value(text, "lines"))
        dtype = {4: "f4", 5: "f8"}[int(_header_value(text, "data type"))]
        order = "<" if int(_header_value(text, "byte order")) == 0 else ">"
        wave = np.array([float(v) for v in _header_value(text, "wavelength").replace("\n", " ").split(",")])
        # BSQ: band-major (bands, lines, samples); the 7 samples are the 7 enhancements
        table = np.frombuffer(raw, dtype=order + dtype).reshape(bands, lines, samples)
    except (KeyError, ValueError) as exc:
        raise AbsorptionTableError(f"{path}: the absorption table does not have mag1c's layout ({exc})") from None
    spectra = np.ascontiguousarray(table[:, 0, :].T, dtype=np.float64)  # (7, bands)
    if spectra.shape[0] != LUT_ENHANCEMENTS_PPM_M.size or wave.size != bands:
        raise AbsorptionTableError(f"{path}: expected 7 spectra on the header's wavelengths")
    return wave, spectra


def load_absorption_table() -> tuple[np.ndarray, np.ndarray]:
    """``(wavelength_nm (31800,), radiance (7, 31800))`` of the mag1c CH4 table."""
    return _load(str(absorption_table_path()))


def unit_absorption(wavelength_nm: np.ndarray, fwhm_nm: np.ndarray) -> np.ndarray:
    """CH4 unit absorption per band, (ppm m)^-1: d ln(radiance) / d enhancement.

    Parameters
    ----------
    wavelength_nm, fwhm_nm : array (bands,)
        Band centres and full widths at half maximum (nm); Gaussian responses.

    Returns
    -------
    numpy.ndarray (bands,)
        ``k`` such that ``L = L0 exp(k a)`` for an enhancement ``a`` in ppm m; 0 for bands
        outside the table (1399.6-2522.0 nm).
    """
    centres = np.asarray(wavelength_nm, dtype=np.float64)
    fwhm = np.asarray(fwhm_nm, dtype=np.float64)
    if centres.shape != fwhm.shape or centres.ndim != 1:
        raise ValueError("wavelength_nm and fwhm_nm must be 1-D and of the same length")
    if not (np.all(np.isfinite(centres)) and np.all(np.isfinite(fwhm)) and np.all(fwhm > 0)):
        raise ValueError("band centres and FWHM must be finite, FWHM > 0 nm")
    wave, spectra = load_absorption_table()
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    k = np.zeros(centres.size)
    inside = (centres - 2 * fwhm >= wave[0]) & (centres + 2 * fwhm <= wave[-1])
    for i in np.flatnonzero(inside):
        lo, hi = np.searchsorted(wave, [centres[i] - 5 * sigma[i], centres[i] + 5 * sigma[i]])
        w = wave[lo:hi]
        resp = np.exp(-0.5 * ((w - centres[i]) / sigma[i]) ** 2)
        band = spectra[:, lo:hi] @ (resp / resp.sum())
        design = np.stack([np.ones_like(LUT_ENHANCEMENTS_PPM_M), LUT_ENHANCEMENTS_PPM_M], axis=1)
        slope = np.linalg.lstsq(design, np.log(band), rcond=None)[0][1]
        k[i] = slope
    return k
