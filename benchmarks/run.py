# SPDX-License-Identifier: Apache-2.0
"""Run the benchmarks side by side and print/record a Markdown report (``make bench``).

Results go to benchmarks/results/ (not committed); BENCHMARKS.md holds the figures
of the last reviewed run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_anomaly  # noqa: E402
import bench_cluster  # noqa: E402
import bench_forest  # noqa: E402
import bench_gridding  # noqa: E402
import bench_month  # noqa: E402
import bench_plumes  # noqa: E402
import bench_read  # noqa: E402
import bench_srf  # noqa: E402
import bench_userpath  # noqa: E402


def _fmt(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _read_section(r: dict) -> list[str]:
    lines = ["## Reading the whole real S5P orbit", ""]
    if "skipped" in r:
        return lines + [f"skipped: {r['skipped']}", ""]
    lines += ["| reader | median | min |", "|---|---|---|"]
    for k, v in r["timings"].items():
        lines.append(f"| {k} | {_fmt(v['median'])} | {_fmt(v['min'])} |")
    return lines + ["", f"eo_pipeline / netCDF4 = **{r['ratio_vs_netCDF4']:.2f}x** (target <= {r['target']}x)", ""]


def _gridding_section(g: dict) -> list[str]:
    lines = ["## Gridding the whole real S5P orbit", ""]
    if "skipped" in g:
        return lines + [f"skipped: {g['skipped']}", ""]
    lines += [f"{g['pixels']} valid pixels, corners derived from the centres. HARP: {g['harp']}.", "",
              "| task | eo_pipeline | peer | peer time | speed-up | target |", "|---|---|---|---|---|---|"]
    for key, label, target in (("area_global_0p05", "area, global_0p05", ">= 5x"),
                               ("area_global_0p01", "area, global_0p01", ">= 10x")):
        e = g[key]
        if "harp" in e:
            lines.append(f"| {label} | {_fmt(e['eo_pipeline_s'])} | HARP bin_spatial | {_fmt(e['harp']['binning'])} "
                         f"(peak {e['harp']['peak_mb']:.0f} MB) | **{e['speedup']:.1f}x** | {target} |")
        else:
            lines.append(f"| {label} | {_fmt(e['eo_pipeline_s'])} | HARP not available | - | - | {target} |")
    p = g["point_global_0p05"]
    if "pyresample_s" in p:
        lines.append(f"| point, global_0p05 | {_fmt(p['eo_pipeline_s'])} | pyresample get_average | "
                     f"{_fmt(p['pyresample_s'])} | **{p['speedup']:.1f}x** | >= 3x |")
    m = g["memory_global_0p01_cog"]
    lines += ["", f"Gridding the orbit onto global_0p01 and writing the COG (3 bands, overviews) in a fresh "
              f"process: {m['seconds']:.1f} s, peak memory **{m['peak_mb']:.0f} MB** (target < 2048 MB), "
              f"COG {m['cog_mb']:.1f} MB.", ""]
    a = g["area_global_0p05"].get("agreement")
    if a:
        lines += [f"Agreement with HARP at 0.05 degree: {a['cells_filled_ours']} cells filled by eo_pipeline, "
                  f"{a['cells_filled_harp']} by HARP, {a['cells_filled_only_one']} filled by only one; "
                  f"max relative difference of the mean {a['max_rel_diff_mean']:.1e}, of the weight "
                  f"{a['max_rel_diff_weight']:.1e} (target 1e-5): **{'OK' if a['ok'] else 'FAIL'}**.", ""]
    if "same_filled_cells" in p:
        lines += [f"Point binning vs pyresample: same filled cells: {p['same_filled_cells']}, max difference "
                  f"{p['max_abs_diff_ppb']:.2g} ppb.", ""]
    return lines


def _forest_section(f: dict) -> list[str]:
    t, tg = f["tile"], f["targets"]
    lines = ["## Forest area by year on a full Hansen tile", "",
             f"Generated tile 40N_100E ({t['size']} x {t['size']} pixels of {t['res_deg']} degree, "
             f"LZW; treecover {t['treecover_mb']:.0f} MB, lossyear {t['lossyear_mb']:.0f} MB), "
             f"each case in a fresh process on {f['machine']['cpus']} cores. "
             f"Targets: {tg['seconds']:.0f} s, {tg['peak_mb']:.0f} MB peak.", "",
             "| case | pixels | time | process | peak memory | tree cover 2000 (ha) "
             "| tree cover 2023 (ha) | within targets |",
             "|---|---|---|---|---|---|---|---|"]
    for key, c in f["cases"].items():
        if "error" in c:
            lines.append(f"| {key}) | - | failed | - | - | - | - | no |")
            continue
        lines.append(f"| {key}) {c['label']} | {c['pixels']:,} | **{_fmt(c['seconds'])}** "
                     f"| {_fmt(c['wall_seconds'])} | **{c['peak_mb']:.0f} MB** "
                     f"| {c['treecover_ha_2000']:,.0f} | {c['treecover_ha_2023']:,.0f} "
                     f"| {'yes' if c['ok'] else '**no**'} |")
    b = f["brute_force"]
    if "rel_diff" in b:
        lines += ["", f"Brute-force check of case a) (pixels >= 30 % per row x the row's WGS84 "
                      f"pixel area, closed form): {b['treecover_ha_2000']:,.2f} ha vs "
                      f"{b['pipeline_ha_2000']:,.2f} ha, relative difference "
                      f"{b['rel_diff']:.1e}: **{'OK' if b['ok'] else 'FAIL'}**."]
    errors = [f"case {k}: {c['error']}" for k, c in f["cases"].items() if "error" in c]
    return lines + [""] + ([*errors, ""] if errors else [])


def _userpath_section(u: dict) -> list[str]:
    lines = ["## The user's path: the whole real S5P orbit, the call users make and the command they run", ""]
    if "skipped" in u:
        return lines + [f"skipped: {u['skipped']}", ""]
    hb = u.get("harp_binning", {})
    lines += [f"{u['pixels']} valid pixels. HARP: {u['harp']}; its time is its binning alone (start-up and "
              "reading subtracted), on the same polygons.", "",
              "| call (warm process) | statistics | product | eo_pipeline | HARP binning | speed-up |",
              "|---|---|---|---|---|---|"]
    for key, t in u["python_call"].items():
        grid, label, state = key.split("/", 2)
        h = hb.get(grid)
        ratio = f"**{h / t:.1f}x**" if h else "-"
        stats = "all 7" if label == "all" else "mean, count, weight"
        lines.append(f"| `grid_soundings([orbit], \"{grid}\").compute()` | {stats} | {state} | {_fmt(t)} | "
                     f"{_fmt(h) if h else '-'} | {ratio} |")
    c = u["command"]
    harp = c.get("harpconvert bin_spatial")
    lines += ["", "| command (whole process, median) | time | vs `harpconvert -a bin_spatial(...)` |", "|---|---|---|"]
    for k, t in c.items():
        lines.append(f"| `{k}` | {_fmt(t)} | {f'{t / harp:.2f}x its time' if harp else '-'} |")
    return lines + [""]


def _month_section(m: dict) -> list[str]:
    lines = ["## A month of daily global_0p05 composites (the command users run)", ""]
    if "skipped" in m:
        return lines + [f"skipped: {m['skipped']}", ""]
    e, h = m["eo_pipeline"], m["harp"]
    lines += [f"{m['orbits']} full-size orbits ({m['days']} days x {m['orbits_per_day']}, {m['orbit_mb']:.1f} MB "
              f"each, made from the real orbit), `eo-pipeline run` with `composite: day` onto global_0p05 "
              f"writing {e['cogs']} COGs ({e['cog_mb']:.0f} MB): **{e['seconds']:.0f} s**, peak memory "
              f"**{e['peak_mb']:.0f} MB** (target < {m['targets']['peak_mb']} MB)."]
    if "per_orbit_s" in h:
        lines += [f"HARP's `bin_spatial` alone on the same polygons: {h['per_orbit_s']:.3f} s per orbit (median of "
                  f"{h['sampled']} orbits), {h['binning_total_s']:.0f} s for {m['orbits']} orbits: eo_pipeline's "
                  f"whole run is **{m['speedup_vs_harp_binning']:.2f}x** faster than HARP's binning alone "
                  f"(target >= {m['targets']['speedup_vs_harp_binning']}x)."]
    return lines + [""]


def _cluster_section(c: dict) -> list[str]:
    lines = ["## More workers: 1 and 2 single-threaded workers (issue 10)", ""]
    if "skipped" in c:
        return lines + [f"skipped: {c['skipped']}", ""]
    target = c["targets"]["speedup_2_vs_1"]
    lines += [f"{c['orbits']} full-size orbits ({c['days']} days x 14), daily global_0p05 composites, "
              f"`eo-pipeline run` as a whole process, median of {c['repeats']} alternating runs (a 1-worker run, "
              "then a 2-worker run, repeated); speed-up as the ratio of the medians, and as the median of the "
              "ratios of each 1-worker run to the 2-worker run right after it:", "",
              "| cluster | 1 worker | 2 workers | 2 workers / 1 worker (medians) | median of the pairs' ratios "
              "(each pair) | largest worker (1 / 2 workers) |",
              "|---|---|---|---|---|---|"]
    what = {"started": "started by hand: `dask scheduler` + N x `dask worker --nthreads 1 --memory-limit 2GB` "
                       "on loopback, then `--scheduler tcp://...` (peak RSS of the worker processes)",
            "kept": "started by hand and kept: the same, a first job untimed, then the timed jobs on it "
                    "(peak RSS of the worker processes)",
            "local": "started by the run: `cluster: {type: local, workers: N, threads_per_worker: 1, "
                     "memory_limit: 2GB}`, its start included (largest process of the run, GNU time)"}
    for mode in ("started", "kept", "local"):
        m = c[mode]
        s, p = m["seconds"], m["peak_mb"]
        pairs = ", ".join(f"{r:.2f}" for r in m["pair_speedups"])
        lines.append(f"| {what[mode]} | {_fmt(s[1])} | {_fmt(s[2])} | **{m['speedup_2_vs_1']:.2f}x** "
                     f"(target >= {target}x) | **{m['median_pair_speedup']:.2f}x** ({pairs}) | "
                     f"{p[1]:.0f} MB / {p[2]:.0f} MB |")
    lines += ["", "The same runs' computing phase alone (`phase_seconds.computing` of each run's `job_summary.json`: "
              "from the graph's submission to the last output written, the part the workers do; kernel of the "
              "run, labelled as such), and the rest of each run (the process's start and imports, opening the "
              "inputs, building the graph, the catalogue: the client's part, which more workers do not shorten):", "",
              "| cluster | computing, 1 worker | computing, 2 workers | 2 workers / 1 worker (medians) | median of "
              "the pairs' ratios (each pair) | rest of the run, 1 / 2 workers |", "|---|---|---|---|---|---|"]
    for mode in ("started", "kept", "local"):
        m = c[mode]
        s, r = m["computing_seconds"], m["outside_computing_seconds"]
        pairs = ", ".join(f"{x:.2f}" for x in m["computing_pair_speedups"])
        lines.append(f"| {mode} | {_fmt(s[1])} | {_fmt(s[2])} | **{m['computing_speedup_2_vs_1']:.2f}x** | "
                     f"**{m['median_computing_pair_speedup']:.2f}x** ({pairs}) | {_fmt(r[1])} / {_fmt(r[2])} |")
    return lines + [""]


def _plumes_section(r: dict) -> list[str]:
    lines = ["## Hyperspectral plumes (EMIT-sized scene)", ""]
    if "skipped" in r:
        return lines + [f"skipped: {r['skipped']}", ""]
    s, t = r["scene"], r["targets"]
    c, p, k = r["command"], r["python_call"], r["kernel"]
    lines += [f"Synthetic EMIT L1B scene `{s['file']}` ({s['lines']} lines x {s['samples']} samples x 285 bands, "
              f"float32, {s['mb']:.0f} MB, plume of {s['plume']['peak']:.0f} ppm m planted at line/sample "
              f"{tuple(s['plume']['centre'])}), {r['machine']['cpus']} cores, {r['machine']['memory_gib']:.0f} GiB. "
              f"Target: under {t['seconds']:.0f} s and {t['peak_mb']:.0f} MB peak.", "",
              "| what | time | peak memory (GNU time max RSS) | within target |", "|---|---|---|---|"]
    if "skipped" in c:
        lines.append(f"| `eo-pipeline plumes RADIANCE --wind-speed 4 -o OUT` (whole process) | skipped: "
                     f"{c['skipped']} | - | - |")
    else:
        lines.append(f"| `eo-pipeline plumes RADIANCE --wind-speed 4 -o OUT` (whole process) "
                     f"| **{_fmt(c['seconds'])}** | **{c['peak_mb']:.0f} MB** | {'yes' if c['ok'] else '**no**'} |")
    lines.append(f"| `run_plumes(path, out, wind_speed=4.0)` (the call; peak of its process) "
                 f"| **{_fmt(p['seconds'])}** | **{p['peak_mb']:.0f} MB** | {'yes' if p['ok'] else '**no**'} |")
    lines.append(f"| kernel: `ch4_matched_filter(cube).compute()`, {k['bands']} bands ({k['cube_mb']:.0f} MB) in "
                 f"memory | {_fmt(k['seconds'])} | {k['peak_mb']:.0f} MB (process, loading included) | - |")
    lines.append("")
    for label, a in (("user path (orthorectified)", p.get("agreement")),
                     ("user path, albedo-corrected", p.get("agreement_albedo_corrected")),
                     ("kernel (sensor geometry)", k.get("agreement")),
                     ("kernel, albedo-corrected", k.get("agreement_albedo_corrected"))):
        if a:
            lines.append(f"- {label}: retrieved / planted mean over the {a['pixels']} pixels above "
                         f"{bench_plumes.PLANTED_MIN_PPM_M:.0f} ppm m: {a['retrieved_mean_ppm_m']:.0f} / "
                         f"{a['planted_mean_ppm_m']:.0f} ppm m = **{a['ratio']:.2f}**")
    lines.append(f"- plume table: {p['plumes']} plume(s) (1 planted) found on `{p.get('table_enhancement', '?')}`, "
                 f"noise {p['noise_ppm_m']:.0f} ppm m")
    pp = p.get("planted_plume")
    if pp:
        lines.append(f"- the planted plume's row: max {pp['max_ppm_m']:.0f} ppm m (planted "
                     f"{r['scene']['plume']['peak']:.0f}), IME {pp['ime_kg']:.0f} kg "
                     f"(planted {p['planted_ime_kg']:.0f} kg), {pp.get('emission_kg_h', float('nan')):.0f} +- "
                     f"{pp.get('emission_uncertainty_kg_h', float('nan')):.0f} kg/h at 4 m/s")
    elif "planted_plume_found" in p:
        lines.append("- the planted plume is **not** in the table")
    return lines + [""]


def _srf_section(r: dict) -> list[str]:
    lines = ["## SRF oversampling (`method=\"srf\"`) of the whole real S5P orbit vs popy", ""]
    if "skipped" in r:
        return lines + [f"skipped: {r['skipped']}", ""]
    p, gr, t = r["popy"], r["grid"], r["timings"]
    w, s, e, n = gr["bbox"]
    lines += [f"Grid {gr['resolution']} degree over {w:g}..{e:g} E, {s:g}..{n:g} N ({gr['shape'][0]} x "
              f"{gr['shape'][1]} cells, {gr['crs']}); {r['pixels']:,} valid pixels with centres in the box "
              f"({r['pixels_used_eo_pipeline']:,} used by eo_pipeline), corners derived from the centres; SRF "
              f"shape {r['srf_shape']}, window {r['srf_window']:g}. Peer: popy `{p['function']}` ({p['repo']}, "
              f"`{p['file']}` at commit {p['commit']}), pure Python and numpy in one process, its call alone on "
              f"the pixels in memory (its best case). {r['machine']['cpus']} cores; every case in one loop, "
              f"alternating, median of {r['repeats']}.", ""]
    if "skipped" in p:
        lines += [f"popy columns skipped: {p['skipped']}", ""]
    popy_s = r.get("popy_s")
    sp = r.get("speedup", {})
    peaks = r.get("command_peak_mb", {})

    def row(k: str, label: str, extra: str = "-", target: bool = True) -> str:
        ratio = f"**{sp[k]:.1f}x**" if k in sp else "-"
        goal = f">= {r['target']:g}x" if target else "-"
        return f"| {label} | {_fmt(t[k]['median'])} | {extra} | {_fmt(popy_s) if popy_s else '-'} | {ratio} | {goal} |"

    head = ["| what | eo_pipeline (median) | peak memory | popy F_block_regrid_ccm | speed-up (popy / eo) | target |",
            "|---|---|---|---|---|---|"]
    lines += ["The user's path:", "", *head,
              row("python call, lazy (open_product included)", "`grid_soundings([open_product(orbit)], grid, "
                  "method=\"srf\", statistics=[mean, count, weight]).compute()` (warm process, opening "
                  "included)"),
              row("python call, loaded", "the same call, product already loaded (`.load()`)")]
    for k in t:
        if k.startswith("eo-pipeline"):
            lines.append(row(k, f"`{k}` (whole process)", f"{peaks[k]:.0f} MB" if k in peaks else "-"))
    if bench_srf.STARTUP in t:
        k = bench_srf.STARTUP
        lines.append(row(k, "for reference: a process that only imports the modules `eo-pipeline grid` imports "
                         "(start-up floor, no work)", f"{peaks[k]:.0f} MB" if k in peaks else "-", target=False))
    lines += ["", "Kernel (not the user's path: the same pixels already in memory, sparse per-cell sums, "
              "not finalized into grids):", "", *head,
              row("kernel: _srf_chunk", "`eo_pipeline.gridding._srf_chunk` (footprints + `srf_accumulate`)",
                  target=False),
              row("kernel: srf_accumulate", "`eo_pipeline._srf_kernel.srf_accumulate` alone", target=False)]
    a = r.get("agreement")
    if a:
        same = "identical sets" if a["same_cells"] else f"{a['cells_with_data_in_one_only']} cells in one only"
        lines += ["", f"Agreement with popy on the same pixels and grid: cells with data "
                      f"{a['cells_with_data_eo_pipeline']:,} (eo_pipeline) and {a['cells_with_data_popy']:,} (popy), "
                      f"{same}; max |diff| of num_samples {a['max_abs_diff_num_samples']:.1e} (its max "
                      f"{a['max_num_samples']:.2f}; relative {a['max_rel_diff_num_samples']:.1e} on the "
                      f"{a['cells_compared_relative']:,} cells above 1e-6 of the max), of the total weight "
                      f"{a['max_abs_diff_weight_rel_to_max']:.1e} of its max (relative {a['max_rel_diff_weight']:.1e} "
                      f"on those cells), of the mean {a['max_abs_diff_mean_ppb']:.1e} ppb. num_samples and weight "
                      f"are float32 grids: in {a['cells_num_samples_underflow']:,} cells with data their SRF tail "
                      f"(< 1e-45) is stored as 0."]
    if "command_matches_call" in r:
        lines += ["", f"The command's NetCDF holds the call's grids: {r['command_matches_call']}."]
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--only", choices=["userpath", "month", "cluster", "read", "gridding", "anomaly", "forest",
                                        "plumes", "srf"], default=None)
    args = p.parse_args(argv)
    # Compile the package's bytecode, as pip does when it installs the wheel: the editable
    # install of `make bench` would otherwise compile every module at each command's start
    # wherever PYTHONDONTWRITEBYTECODE is set (0.3-0.4 s of `eo-pipeline grid` on this machine).
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "eo_pipeline"), quiet=1)
    report = {"machine": f"{platform.machine()} {platform.python_version()}", "when": time.strftime("%Y-%m-%d %H:%M")}
    lines: list[str] = []
    if args.only in (None, "userpath"):
        report["userpath"] = bench_userpath.run(args.repeats)
        lines += _userpath_section(report["userpath"])
    if args.only in (None, "month"):
        report["month"] = bench_month.run()
        lines += _month_section(report["month"])
    if args.only in (None, "cluster"):
        report["cluster"] = bench_cluster.run(repeats=max(3, args.repeats // 2))
        lines += _cluster_section(report["cluster"])
    if args.only in (None, "read"):
        report["read"] = bench_read.run(args.repeats)
        lines += _read_section(report["read"])
    if args.only in (None, "gridding"):
        report["gridding"] = bench_gridding.run(max(3, args.repeats // 2))
        lines += ["# Kernels (not the user's path: inputs already in memory)", ""]
        lines += _gridding_section(report["gridding"])
    if args.only in (None, "anomaly"):
        report["anomaly"] = a = bench_anomaly.run()
        lines += ["## Anomalies and hotspots over a year of daily china_0p05 composites", "",
                  f"{a['days']} daily composites of {a['cells_per_day']} cells: daily-median anomalies with "
                  f"z-scores and hotspots in **{a['seconds']:.1f} s** (target < {a['target_seconds']} s); "
                  f"{a['hotspots']} hotspots on {a['days_with_hotspots']} days ({a['planted_days']} days carry a "
                  f"planted enhancement). The moving-median background (radius 100 km) takes "
                  f"{a['moving_median_seconds_per_day']:.2f} s per daily map.", ""]
    if args.only in (None, "forest"):
        report["forest"] = bench_forest.run()
        lines += _forest_section(report["forest"])
    if args.only in (None, "plumes"):
        report["plumes"] = bench_plumes.run()
        lines += _plumes_section(report["plumes"])
    if args.only in (None, "srf"):
        report["srf"] = bench_srf.run(max(3, args.repeats // 2 + 1))
        lines += _srf_section(report["srf"])
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "latest.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
