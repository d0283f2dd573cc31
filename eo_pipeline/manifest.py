# SPDX-License-Identifier: Apache-2.0
"""Resumable runs: the manifest of an output folder (``manifest.json``).

The manifest records, for every output a job wrote, the configuration hash
(:func:`eo_pipeline.config.config_hash`), the input files its data came from (path,
size in bytes, modification time), the software version, when it was written and the
file's own size and modification time; and, per time step (``<species>/<label>``, or
``<species>/all`` for a single map), the soundings used and the footprints dropped.

A rerun of the same job into the same folder then writes only what is missing or out of
date: an output is up to date when its entry has the job's configuration hash, exactly
the inputs (paths, sizes and modification times) its data would now come from, and the
file is still there as it was written (same size and modification time). Files for a new
day thus add only that day's outputs (and rewrite the outputs that summarise every day:
NetCDF stacks, hotspot and region tables), a changed input file rewrites the outputs of
its days, and a changed configuration is refused unless ``--overwrite`` is given (never
a mix of old and new).

Each writer's last step records its outputs in a small file of its own under
``.eo_pipeline_records/`` as soon as they are complete, on whichever worker wrote them
(no lock is needed, no state travels to the client), so a run that is killed keeps what
it finished; :meth:`Manifest.load` and :meth:`Manifest.save` fold those records into
``manifest.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import ConfigError

__all__ = ["MANIFEST_NAME", "RECORDS_DIR", "Manifest", "stamp", "stamps", "record_outputs", "SOFTWARE"]

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = ".eo_pipeline_records"
FORMAT = "eo_pipeline-manifest/1"
SOFTWARE = f"eo_pipeline {__version__}"


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def stamp(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identify one input file's content: absolute path, size (bytes), modification time (ns and ISO UTC)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "modified": _iso(st.st_mtime_ns)}


def stamps(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """:func:`stamp` of each file, sorted by path, each file once."""
    out = {s["path"]: s for s in (stamp(p) for p in paths)}
    return [out[k] for k in sorted(out)]


def _key(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    return sorted((str(s["path"]), int(s["size"]), int(s["mtime_ns"])) for s in items)


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.eo-tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def record_outputs(result: Any, records_dir: str, name: str, entries: Sequence[dict[str, Any]],
                   counts: Mapping[str, Sequence[Any]]) -> Any:
    """Writer's last step (a task): record finished outputs in ``records_dir/name.json``; returns ``result``.

    ``entries`` describe the outputs (``file`` relative to the output folder, config
    hash, inputs...); their size and modification time are taken here, now that they are
    complete. ``counts`` maps ``<species>/<label>`` to (soundings used, footprints dropped).
    """
    folder = Path(records_dir)
    done = []
    for e in entries:
        st = (folder.parent / e["file"]).stat()
        done.append({**e, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "written": _iso(st.st_mtime_ns)})
    periods = {k: {"soundings_used": _total(u), "footprints_dropped": _total(d)} for k, (u, d) in counts.items()}
    folder.mkdir(exist_ok=True)
    _write_json(folder / f"{name}.json", {"outputs": done, "periods": periods})
    return result


def _total(v: Any) -> int:
    import numpy as np

    return int(np.asarray(v).sum())


class Manifest:
    """The manifest of one output folder: what was written, from what, by which configuration.

    Parameters
    ----------
    out_dir : path
        The output folder (``manifest.json`` and ``.eo_pipeline_records/`` live there).
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.config_hash: str | None = None
        self.job: str | None = None
        self.software: str | None = None
        self.inputs: list[dict[str, Any]] = []
        self.complete = False
        self.outputs: dict[str, dict[str, Any]] = {}
        self.periods: dict[str, dict[str, int]] = {}

    @property
    def path(self) -> Path:
        """``<out_dir>/manifest.json``."""
        return self.out_dir / MANIFEST_NAME

    @property
    def records_dir(self) -> Path:
        """Where the writers' tasks leave their records (folded in by :meth:`load` and :meth:`save`)."""
        return self.out_dir / RECORDS_DIR

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str], *, replace_damaged: bool = False) -> Manifest:
        """Read the folder's manifest, with the records of a killed or running job folded in (empty if none).

        A manifest that cannot be read is an error, unless ``replace_damaged``
        (``--overwrite``): then it is treated as empty and replaced at the end of the run.
        """
        m = cls(out_dir)
        if m.path.exists():
            try:
                doc = json.loads(m.path.read_text())
                if doc.get("manifest") != FORMAT:
                    raise ValueError(f"not an {FORMAT} manifest")
                m.config_hash = doc.get("config_hash")
                m.job = doc.get("job")
                m.software = doc.get("software")
                m.inputs = list(doc.get("inputs", []))
                m.complete = bool(doc.get("complete", False))
                m.outputs = dict(doc.get("outputs", {}))
                m.periods = dict(doc.get("periods", {}))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                if replace_damaged:
                    return cls(out_dir)
                raise ConfigError(f"{m.path}: cannot read the manifest of the output folder ({exc}); "
                                  "run with --overwrite to recompute every output, or choose another --output") from exc
        m._fold_records()
        return m

    def _fold_records(self) -> None:
        if not self.records_dir.is_dir():
            return
        for f in sorted(self.records_dir.glob("*.json")):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue  # a record being written as the run was killed: its outputs are redone
            for e in doc.get("outputs", []):
                self.outputs[e["file"]] = e
            self.periods.update(doc.get("periods", {}))
            self.complete = False
            if self.config_hash is None and doc.get("outputs"):
                self.config_hash = doc["outputs"][0].get("config_hash")

    # ------------------------------------------------------------------ questions

    def check_config(self, chash: str, overwrite: bool) -> None:
        """Refuse to mix outputs of two configurations in one folder (unless ``overwrite``)."""
        if overwrite or self.config_hash is None or self.config_hash == chash:
            return
        raise ConfigError(f"{self.out_dir}: its outputs were made with another configuration (config hash "
                          f"{self.config_hash}, now {chash}); run with --overwrite to recompute them all, "
                          "or write to another folder with --output")

    def up_to_date(self, file: str, chash: str, inputs: Sequence[Mapping[str, Any]]) -> bool:
        """Whether output ``file`` (relative to the folder) is there as recorded, from ``inputs`` with ``chash``."""
        e = self.outputs.get(file)
        if e is None or e.get("config_hash") != chash or _key(e.get("inputs", [])) != _key(inputs):
            return False
        try:
            st = (self.out_dir / file).stat()
        except OSError:
            return False
        return st.st_size == e.get("size") and st.st_mtime_ns == e.get("mtime_ns")

    def all_up_to_date(self, chash: str, inputs: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the last complete run had these inputs and this configuration and left every output as recorded."""
        if not self.complete or self.config_hash != chash or _key(self.inputs) != _key(inputs) or not self.outputs:
            return False
        return all(self.up_to_date(f, chash, e.get("inputs", [])) for f, e in self.outputs.items())

    # ------------------------------------------------------------------ changes

    def remove_outputs(self, keep: Iterable[str] = ()) -> list[Path]:
        """Delete the recorded outputs not in ``keep`` (names relative to the folder); forget them."""
        keep = set(keep)
        removed = []
        for f in list(self.outputs):
            if f in keep:
                continue
            p = self.out_dir / f
            if p.resolve().parent == self.out_dir.resolve() and p.is_file():
                p.unlink()
                removed.append(p)
            del self.outputs[f]
        return removed

    def forget(self, files: Iterable[str]) -> None:
        """Drop the entries of ``files`` (they are about to be written again)."""
        for f in files:
            self.outputs.pop(f, None)

    def save(self, *, job: str, chash: str, inputs: Sequence[Mapping[str, Any]], complete: bool) -> Path:
        """Fold this run's records in and write ``manifest.json`` atomically; the records go."""
        self._fold_records()
        self.config_hash, self.job, self.software = chash, job, SOFTWARE
        self.inputs = list(inputs)
        self.complete = complete
        doc = {"manifest": FORMAT, "job": job, "config_hash": chash, "software": SOFTWARE,
               "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
               "complete": complete, "inputs": self.inputs,
               "outputs": {k: self.outputs[k] for k in sorted(self.outputs)},
               "periods": {k: self.periods[k] for k in sorted(self.periods)}}
        _write_json(self.path, doc)
        shutil.rmtree(self.records_dir, ignore_errors=True)
        return self.path
