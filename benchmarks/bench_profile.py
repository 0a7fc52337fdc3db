#!/usr/bin/env python
"""Benchmark profiling: kernels from memory, end to end from Parquet, peak RSS, and the speed-up
over a per-example Python loop computing the same metrics.

    python benchmarks/bench_profile.py --sizes 1e5,1e6,1e7 --epochs 10

For every size it
  1. generates a synthetic run (soicurate.recording.synthetic.generate_run, clearly synthetic
     data written by the real DynamicsWriter) into --workdir, once: later invocations reuse it;
  2. runs soicurate.write_profile on it in a fresh subprocess: a first (cold) call, then a
     second (warm) call that is the end-to-end time; the subprocess reports its peak RSS
     (VmHWM), then a second subprocess does the same with --small-block-rows;
  3. loads the run's validated blocks into memory with RunReader.iter_blocks and times
     pipeline.compute_block over them (the kernel, best of --repeats, after a warm-up call);
  4. times a straightforward per-example Python loop (lists over epochs, np.mean / np.std per
     example, forgetting by a loop: the way Dataset Cartography's compute_train_dy_metrics
     works) on --loop-examples examples of the same data, checks that it agrees with the
     kernel, and scales it to example-epochs per second.

Everything is printed as markdown tables plus the budgets of DESIGN.md with pass / fail; with
--markdown PATH the same text is also written to PATH (in a file with the result markers, such
as docs/performance.md, only the part between them is replaced). Budgets are checked here,
never in timed tests. See docs/performance.md for what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Budgets (DESIGN.md, "Performance budgets").
KERNEL_BUDGET = 1e8  # example-epochs per second, from memory, 2 cores
E2E_BUDGET = 2e7  # example-epochs per second, end to end from Parquet
SPEEDUP_BUDGET = 500.0  # kernel over a per-example Python loop
RSS_GROWTH_LIMIT = 1.25  # peak RSS at the largest size over the 10^6 one: "bounded by the block"

GENERATOR = "soicurate.recording.synthetic.generate_run(seed=0, data_seed=1234, 2 labels, sources)"
# Bytes on disk per example-epoch of a generated run (measured: 12.4 MB per 10^6 examples).
BYTES_PER_EXAMPLE_EPOCH = 13
WARMUP_EXAMPLES = 2000


# -- environment -------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def environment() -> dict:
    import numba
    import polars
    import pyarrow

    import soicurate
    from soicurate.profiling import kernels

    # Run one parallel kernel so that numba has chosen its threading layer.
    n = 64
    codes = np.empty(n, np.int8)
    where = np.empty(n, np.int32)
    z = np.zeros((2, n), np.int32)
    f = np.full((2, n), 0.5, np.float32)
    kernels.validate_block(z, z, f, f, f, True, 2, codes, where)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    mem_total = "n/a"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem_total = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu_model(),
        "cpus_usable": affinity,
        "memory": mem_total,
        "numba_threading_layer": numba.threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pyarrow": pyarrow.__version__,
        "polars": polars.__version__,
        "soicurate": soicurate.__version__,
        "platform": platform.platform(),
    }


# -- data ----------------------------------------------------------------------------------------
def run_dir_for(workdir: Path, n: int, epochs: int) -> Path:
    return workdir / f"synthetic_{n}x{epochs}"


def generator_fingerprint() -> str:
    """How the writer lays out a run (schemas, encodings, compression, row-group size), from a
    tiny generated run: a cached run written differently is regenerated, since the encoding
    changes the end-to-end time. Refactoring the writer's code does not."""
    import hashlib

    import pyarrow.parquet as pq

    from soicurate.recording import writer
    from soicurate.recording.synthetic import generate_run

    h = hashlib.sha256(repr(getattr(writer, "ROW_GROUP_ROWS", None)).encode())
    with tempfile.TemporaryDirectory(prefix="soicurate-bench-fp-") as tmp:
        run = generate_run(Path(tmp) / "run", num_examples=50, num_epochs=2)
        for name in sorted(os.listdir(run)):
            if not name.endswith(".parquet"):
                continue
            pf = pq.ParquetFile(run / name)
            h.update(name.encode() + pf.schema_arrow.to_string(show_schema_metadata=False).encode())
            rg = pf.metadata.row_group(0)
            for i in range(rg.num_columns):
                col = rg.column(i)
                desc = pf.metadata.schema.column(i)
                h.update(f"{col.path_in_schema}:{desc.physical_type}:{desc.max_definition_level}:"
                         f"{col.compression}:{sorted(col.encodings)}".encode())  # fmt: skip
    return h.hexdigest()[:16]


def ensure_run(workdir: Path, n: int, epochs: int, regenerate: bool = False) -> tuple[Path, float | None]:
    """The cached run directory for n x epochs, generated if missing; (path, seconds or None)."""
    from soicurate.atomic import atomic_directory
    from soicurate.recording.synthetic import generate_run

    path = run_dir_for(workdir, n, epochs)
    marker = path / "bench-complete.json"
    fingerprint = generator_fingerprint()
    if marker.exists() and not regenerate:
        try:
            if json.loads(marker.read_text()).get("fingerprint") == fingerprint:
                return path, None
        except ValueError:
            pass
        print(f"  {path} was written by other writer code: regenerating", flush=True)
    if path.exists():  # stale, or an interrupted generation left something behind
        shutil.rmtree(path)
    need = n * epochs * BYTES_PER_EXAMPLE_EPOCH * 1.1 + n * 200  # + profile and its stage file
    free = shutil.disk_usage(workdir).free
    if free < need * 1.5:
        sys.exit(
            f"not enough disk space in {workdir} for {n} x {epochs}: need about {need / 2**30:.1f} GiB "
            f"(with margin {need * 1.5 / 2**30:.1f} GiB), {free / 2**30:.1f} GiB free"
        )
    print(f"  generating {n:,} x {epochs} synthetic run in {path} (about {need / 2**30:.2f} GiB) ...", flush=True)
    t = time.perf_counter()
    with atomic_directory(path) as tmp:
        generate_run(tmp, num_examples=n, num_epochs=epochs, seed=0)
        info = {"examples": n, "epochs": epochs, "generator": GENERATOR, "fingerprint": fingerprint}
        (tmp / "bench-complete.json").write_text(json.dumps(info))
    return path, time.perf_counter() - t


# -- end to end, in a fresh subprocess ------------------------------------------------------------
def _vm(key: str) -> float:
    """VmHWM / VmRSS of this process in MiB (ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def child_e2e(spec: dict) -> dict:
    """Runs in the subprocess: time write_profile and report peak RSS."""
    t0 = time.perf_counter()
    import pyarrow.parquet  # noqa: F401  (write_profile imports it on its first call anyway)

    from soicurate.profiling.pipeline import write_profile

    t_import = time.perf_counter() - t0
    rss_after_import = _vm("VmRSS")
    out = Path(spec["output"])
    result = {"import_s": t_import, "rss_after_import_mib": rss_after_import}
    if spec.get("warmup_run"):
        t = time.perf_counter()
        write_profile(spec["warmup_run"], out, block_rows=spec["block_rows"])
        result["cold_s"] = t_import + time.perf_counter() - t
        result["cold_on"] = "warm-up run"
    else:
        t = time.perf_counter()
        write_profile(spec["run"], out, block_rows=spec["block_rows"])
        result["cold_s"] = t_import + time.perf_counter() - t
        result["cold_on"] = "this run"
    times, cpu = [], []
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        c = time.process_time()
        summary = write_profile(spec["run"], out, block_rows=spec["block_rows"])
        cpu.append(time.process_time() - c)
        times.append(time.perf_counter() - t)
    best = int(np.argmin(times))
    result["warm_s"] = times[best]
    result["warm_cpu_s"] = cpu[best]  # CPU time of all the process's threads in that call
    result["warm_all_s"] = times
    result["warm_all_cpu_s"] = cpu
    result["peak_rss_mib"] = _vm("VmHWM")
    result["num_examples"] = summary.num_examples
    result["output_bytes"] = out.stat().st_size
    out.unlink()
    return result


def child_breakdown(spec: dict) -> dict:
    """Runs in the subprocess: the CPU time of each stage of write_profile, each run alone on
    the same data (best of 3), next to one warm write_profile call. write_profile runs the
    stages on several threads at once (reading ahead, writing behind), so its wall time is
    below the sum; its CPU time is about the sum."""
    import pyarrow as pa

    from soicurate.profiling import kernels, pipeline
    from soicurate.profiling.reader import RunReader
    from soicurate.profiling.soi import late_start
    from soicurate.profiling.streams import column_stream, next_chunks

    out = Path(spec["output"])
    rows = spec["block_rows"]
    pipeline.write_profile(spec["warmup_run"], out, block_rows=rows)
    reader = RunReader(spec["run"])
    E = len(reader.epochs)
    cols = ["example_id", "gold", "pred", "p_gold", "loss"] + (["margin"] if reader.has_margin else [])

    def best(fn, repeats=3):
        res = []
        for _ in range(repeats):
            c = time.process_time()
            fn()
            res.append(time.process_time() - c)
        return min(res)

    def decode():
        streams = [column_stream(reader.files[e], cols, rows) for e in reader.epochs]
        while next_chunks(streams)[0] is not None:
            pass

    def examples():
        if reader.carry_columns:
            for _ in column_stream([reader.examples_path], ["example_id", *reader.carry_columns], rows,
                                   arrow=reader.carry_columns):  # fmt: skip
                pass

    blocks = list(reader._blocks(rows, late_fraction=0.25, arrow_groups=True, serial=True))

    def copy_and_kernel():
        for b in blocks:
            n = b.n
            arrays = [np.empty((E, n), a.dtype) for a in (b.pred, b.pred, b.p_gold, b.loss, b.p_gold)]
            for e in range(E):  # the copies of each epoch's columns into the (E, n) block arrays
                arrays[0][e] = b.gold
                arrays[1][e] = b.pred[e]
                arrays[2][e] = b.p_gold[e]
                arrays[3][e] = b.loss[e]
                arrays[4][e] = b.margin[e] if b.margin is not None else b.p_gold[e]
            types = (np.float64, np.float64, np.float64, np.int32, np.int32, np.int32, np.bool_, np.float64,
                     np.float64, np.int8, np.bool_, np.float64, np.bool_)  # fmt: skip
            outs = [np.empty(n, t) for t in types]
            kernels.profile_validated_block_serial(*arrays, b.margin is not None, len(reader.label_names),
                                                   late_start(E), *outs)  # fmt: skip

    summary = pipeline.ProfileSummary(label_names=reader.label_names, group_columns=reader.group_columns)
    summary.thresholds = {"mode": "absolute", "fraction": None, "variability": 0.2, "confidence": 0.5}
    final = pipeline._final_schema(pipeline._schema(reader.carry_columns, 1), summary)
    names = pipeline._ProfileNames(reader.label_names, 1)
    tables: list = []

    def assemble():
        tables.clear()
        carried = {c: pipeline._Carried(c in reader.group_columns) for c in reader.carry_columns}
        check = pipeline.RegionHistograms()
        for b in blocks:
            stats = pipeline.combine_runs([pipeline.compute_block(b, 0.25)])
            check.add(stats["confidence"], stats["variability"])
            codes = pipeline.region_codes(stats["confidence"], stats["variability"], 0.2, 0.5)
            columns, group_codes = {}, {}
            for c, conv in carried.items():
                columns[c], g = conv.convert(b.groups[c])
                if conv.group:
                    group_codes[c] = (g, conv.values)
            summary.add_coded(stats["category"], b.gold, group_codes)
            tables.append(pipeline._profile_table(b.example_id, b.gold, columns, stats, codes, names, final))

    def write():
        sink = pipeline._ProfileSink(pa.BufferOutputStream(), final)
        for t in tables:
            sink.write(t)
        sink.close()

    stages = {
        "region pre-pass: read p_gold, confidence/variability histograms": best(
            lambda: pipeline._region_histograms([reader], rows)),
        "read + decode the epoch Parquet files": best(decode),
        "read examples.parquet (group columns)": best(examples),
        "copy into (E, n) arrays + fused validate/profile kernel": best(copy_and_kernel),
        "regions, counts, histogram check, Arrow table of each block": best(assemble),
        "encode + write the profile Parquet": best(write),
    }
    blocks.clear()
    tables.clear()
    t = time.perf_counter()
    c = time.process_time()
    pipeline.write_profile(spec["run"], out, block_rows=rows)
    cpu = time.process_time() - c
    wall = time.perf_counter() - t
    out.unlink()
    return {"wall_s": wall, "cpu_s": cpu, "stages": stages}


def run_child(spec: dict, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"end-to-end subprocess failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- kernels from memory -------------------------------------------------------------------------
def load_blocks(run: Path, block_rows: int):
    from soicurate.profiling.reader import RunReader

    return list(RunReader(run).iter_blocks(block_rows))


def time_kernels(blocks, repeats: int) -> dict:
    """Best-of-repeats seconds for compute_block, profile_block alone and validate_block alone."""
    from soicurate.profiling import kernels
    from soicurate.profiling.pipeline import compute_block
    from soicurate.profiling.soi import late_start

    compute_block(blocks[0])  # warm-up (loads / compiles the kernels)

    def best(fn) -> float:
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return min(out)

    def all_compute():
        for b in blocks:
            compute_block(b)

    prepared = []
    for b in blocks:
        n = b.n
        E = b.pred.shape[0]
        outs = [np.empty(n, t) for t in (np.float64, np.float64, np.float64, np.int32, np.int32, np.int32,
                                         np.bool_, np.float64, np.float64, np.int8)]  # fmt: skip
        margin = b.margin if b.margin is not None else np.empty((0, 0), np.float32)
        # validate_block takes gold per epoch, (E, n), as the reader builds it.
        gold = np.ascontiguousarray(np.broadcast_to(b.gold, b.pred.shape))
        prepared.append((b, margin, late_start(E), outs, gold, np.empty(n, np.int8), np.empty(n, np.int32)))

    def all_profile():
        for b, margin, start, outs, _, _, _ in prepared:
            kernels.profile_block(b.gold, b.pred, b.p_gold, b.loss, margin, b.margin is not None, start, *outs)

    def all_validate():
        for b, margin, _, _, gold, codes, where in prepared:
            kernels.validate_block(gold, b.pred, b.p_gold, b.loss, margin, b.margin is not None, 2, codes, where)

    extras = [(np.empty(b.n, np.bool_), np.empty(b.n, np.float64), np.empty(b.n, np.bool_)) for b in blocks]

    def all_fused():
        for (b, margin, start, outs, gold, _, _), extra in zip(prepared, extras):
            kernels.profile_validated_block(gold, b.pred, b.p_gold, b.loss, margin, b.margin is not None, 2, start,
                                            *outs, *extra)  # fmt: skip

    all_profile()
    all_validate()
    all_fused()
    return {"compute_block_s": best(all_compute), "profile_block_s": best(all_profile),
            "validate_block_s": best(all_validate), "fused_s": best(all_fused)}  # fmt: skip


# -- the per-example Python loop -----------------------------------------------------------------
CATEGORY_NAMES = ("always_correct", "learned_early", "learned_late", "forgettable", "forgotten", "unlearned")


def loop_records(blocks, m: int) -> list[dict]:
    """Per-example records (lists over epochs), the layout per-example tools work on: untimed."""
    records = []
    for b in blocks:
        k = min(b.n, m - len(records))
        p, pred, loss = b.p_gold[:, :k].T.tolist(), b.pred[:, :k].T.tolist(), b.loss[:, :k].T.tolist()
        margin = b.margin[:, :k].T.tolist() if b.margin is not None else [None] * k
        for i in range(k):
            records.append({"guid": int(b.example_id[i]), "gold": int(b.gold[i]), "p_gold": p[i], "pred": pred[i],
                            "loss": loss[i], "margin": margin[i]})  # fmt: skip
        if len(records) >= m:
            break
    return records


def loop_profile(records: list[dict], late_start: int) -> dict:
    """The same metrics as the kernel, one example at a time (cf. Cartography's
    compute_train_dy_metrics: per-example lists, np.mean / np.std, forgetting by a loop)."""
    confidence, variability, correctness, forgetting, learning = {}, {}, {}, {}, {}
    first_learned, final_correct, mean_loss, mean_margin, category = {}, {}, {}, {}, {}
    for record in records:
        guid = record["guid"]
        gold = record["gold"]
        correctness_trend = []
        true_probs_trend = []
        for e in range(len(record["pred"])):
            true_probs_trend.append(record["p_gold"][e])
            correctness_trend.append(record["pred"][e] == gold)
        confidence[guid] = np.mean(true_probs_trend)
        variability[guid] = np.std(true_probs_trend)
        correctness[guid] = sum(correctness_trend) / len(correctness_trend)
        forgets = learns = 0
        first = -1
        for e, is_correct in enumerate(correctness_trend):
            if is_correct and first < 0:
                first = e + 1
            if e > 0:
                if correctness_trend[e - 1] and not is_correct:
                    forgets += 1
                elif not correctness_trend[e - 1] and is_correct:
                    learns += 1
        forgetting[guid] = forgets
        learning[guid] = learns
        first_learned[guid] = first
        final_correct[guid] = correctness_trend[-1]
        mean_loss[guid] = np.mean(record["loss"])
        mean_margin[guid] = np.mean(record["margin"]) if record["margin"] is not None else float("nan")
        if all(correctness_trend):
            category[guid] = "always_correct"
        elif not any(correctness_trend):
            category[guid] = "unlearned"
        elif forgets > 0:
            category[guid] = "forgettable" if correctness_trend[-1] else "forgotten"
        elif first >= late_start:
            category[guid] = "learned_late"
        else:
            category[guid] = "learned_early"
    return {"confidence": confidence, "variability": variability, "correctness": correctness,
            "forgetting_events": forgetting, "learning_events": learning, "first_learned_epoch": first_learned,
            "final_correct": final_correct, "mean_loss": mean_loss, "mean_margin": mean_margin, "category": category}  # fmt: skip


def time_loop(blocks, m: int) -> dict:
    from soicurate.profiling.pipeline import compute_block
    from soicurate.profiling.soi import late_start

    E = blocks[0].pred.shape[0]
    records = loop_records(blocks, m)
    t = time.perf_counter()
    result = loop_profile(records, late_start(E))
    seconds = time.perf_counter() - t
    # The loop must compute what the kernel computes, or the comparison means nothing.
    n_checked = 0
    for b in blocks:
        k = min(b.n, len(records) - n_checked)
        stats = compute_block(b)
        ids = b.example_id[:k]
        for key in ("confidence", "variability", "correctness", "mean_loss", "mean_margin"):
            got = np.array([result[key][int(i)] for i in ids], np.float64)
            if not np.allclose(got, stats[key][:k], rtol=1e-6, atol=1e-9, equal_nan=True):
                raise SystemExit(f"python loop and kernel disagree on {key}")
        for key in ("forgetting_events", "learning_events", "first_learned_epoch", "final_correct"):
            got = np.array([result[key][int(i)] for i in ids])
            if not np.array_equal(got, stats[key][:k]):
                raise SystemExit(f"python loop and kernel disagree on {key}")
        cats = [CATEGORY_NAMES[c] for c in stats["category"][:k]]
        if cats != [result["category"][int(i)] for i in ids]:
            raise SystemExit("python loop and kernel disagree on category")
        n_checked += k
        if n_checked >= len(records):
            break
    return {"loop_s": seconds, "loop_examples": len(records), "loop_ex_ep_per_s": len(records) * E / seconds}


# -- report --------------------------------------------------------------------------------------
def fmt_rate(x: float) -> str:
    return f"{x:.3g}" if x < 1e3 else f"{x:.2e}".replace("e+0", "e").replace("e+", "e")


def fmt_size(n: int) -> str:
    e = int(round(np.log10(n)))
    return f"10^{e}" if 10**e == n else f"{n:,}"


def report(env: dict, rows: list[dict], args, command: str, load_before: str, load_after: str, breakdown=None) -> str:
    lines = []
    lines.append(f"Command: `{command}`")
    lines.append("")
    lines.append(f"- CPU: {env['cpu']}, {env['cpus_usable']} usable CPUs, {env['memory']} RAM; "
                 f"load average (1/5/15 min) before: {load_before}, after: {load_after}")  # fmt: skip
    lines.append(f"- numba {env['numba']} threading layer `{env['numba_threading_layer']}`, "
                 f"{env['numba_threads']} threads; Python {env['python']}, numpy {env['numpy']}, "
                 f"pyarrow {env['pyarrow']}, polars {env['polars']}, soicurate {env['soicurate']}")  # fmt: skip
    lines.append(f"- Data: {GENERATOR}; block_rows {args.block_rows:,}; kernel best of {args.repeats}, "
                 f"end to end best of {args.e2e_repeats} warm call(s) up to 10^6 examples (one above); "
                 f"loop on {args.loop_examples:,} examples")  # fmt: skip
    lines.append("")
    head = ["examples", "epochs", "kernel ex-ep/s", "end-to-end ex-ep/s", "end-to-end s", "end-to-end CPU s",
            "cold first call s", "peak RSS MiB", "loop ex-ep/s", "speed-up kernel/loop",
            "speed-up e2e/loop"]  # fmt: skip
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" for _ in head) + "|")
    for r in rows:
        ee = r["n"] * r["epochs"]
        k = ee / r["kernel"]["compute_block_s"]
        e2e = ee / r["e2e"]["warm_s"]
        loop = r["loop"]["loop_ex_ep_per_s"]
        cpu = r["e2e"].get("warm_cpu_s")
        cells = [fmt_size(r["n"]), str(r["epochs"]), fmt_rate(k), fmt_rate(e2e), f"{r['e2e']['warm_s']:.2f}",
                 f"{cpu:.2f}" if cpu is not None else "-", f"{r['e2e']['cold_s']:.2f}",
                 f"{r['e2e']['peak_rss_mib']:.0f}", fmt_rate(loop), f"{k / loop:,.0f}x", f"{e2e / loop:,.0f}x"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Kernel detail (example-epochs per second from memory, best of repeats):")
    lines.append("")
    lines.append("| examples | compute_block | profile_block alone | validate_block alone | "
                 "profile_validated_block (fused, as write_profile runs it) |")  # fmt: skip
    lines.append("|---:|---:|---:|---:|---:|")
    for r in rows:
        ee = r["n"] * r["epochs"]
        kk = r["kernel"]
        lines.append(f"| {fmt_size(r['n'])} | {fmt_rate(ee / kk['compute_block_s'])} | "
                     f"{fmt_rate(ee / kk['profile_block_s'])} | {fmt_rate(ee / kk['validate_block_s'])} | "
                     f"{fmt_rate(ee / kk['fused_s'])} |")  # fmt: skip
    lines.append("")
    lines.append("Peak RSS of `write_profile` against the block size (MiB; each in a fresh process):")
    lines.append("")
    lines.append(f"| examples | block_rows {args.block_rows:,} | block_rows {args.small_block_rows:,} | "
                 f"RSS after imports | end-to-end s with block_rows {args.small_block_rows:,} |")  # fmt: skip
    lines.append("|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r.get("e2e_small")
        lines.append(f"| {fmt_size(r['n'])} | {r['e2e']['peak_rss_mib']:.0f} | "
                     f"{s['peak_rss_mib']:.0f} | {r['e2e']['rss_after_import_mib']:.0f} | {s['warm_s']:.2f} |"
                     if s else f"| {fmt_size(r['n'])} | {r['e2e']['peak_rss_mib']:.0f} | - | "
                     f"{r['e2e']['rss_after_import_mib']:.0f} | - |")  # fmt: skip
    if rows and "compile_s" in rows[0]:
        lines.append("")
        lines.append(f"First call with an empty numba cache (compiles every kernel), {fmt_size(rows[0]['n'])} examples: "
                     f"{rows[0]['compile_s']:.2f} s (the cold column above loads the compiled kernels from numba's cache).")  # fmt: skip
    if breakdown:
        lines.append("")
        total = sum(breakdown["stages"].values())
        lines.append(f"Where the end-to-end time goes, {fmt_size(breakdown['n'])} x {args.epochs}: CPU seconds of each "
                     f"stage run alone (best of 3). One warm `write_profile` call on the same data, where the stages "
                     f"overlap on threads: {breakdown['wall_s']:.2f} s wall, "
                     f"{breakdown['cpu_s']:.2f} s CPU.")  # fmt: skip
        lines.append("")
        lines.append("| stage | CPU seconds | share |")
        lines.append("|---|---:|---:|")
        for label, v in breakdown["stages"].items():
            lines.append(f"| {label} | {v:.3f} | {v / total:.0%} |")
        lines.append(f"| sum | {total:.3f} | 100% |")
    lines.append("")
    lines.append("Budgets (DESIGN.md):")
    lines.append("")
    for line in budget_lines(rows):
        lines.append(f"- {line}")
    return "\n".join(lines)


def budget_lines(rows: list[dict]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    out = []
    for r in rows:
        ee = r["n"] * r["epochs"]
        k = ee / r["kernel"]["compute_block_s"]
        e2e = ee / r["e2e"]["warm_s"]
        loop = r["loop"]["loop_ex_ep_per_s"]
        out.append(
            f"{fmt_size(r['n'])} x {r['epochs']}: kernel {fmt_rate(k)} >= 1e8/s {verdict(k >= KERNEL_BUDGET)}; "
            f"end to end {fmt_rate(e2e)} >= 2e7/s {verdict(e2e >= E2E_BUDGET)}; "
            f"kernel/loop {k / loop:,.0f}x >= 500x {verdict(k / loop >= SPEEDUP_BUDGET)}"
        )
    by_n = {r["n"]: r for r in rows}
    largest = max(by_n)
    ref = by_n.get(10**6)
    if ref is not None and largest > ref["n"]:
        a, b = by_n[largest]["e2e"]["peak_rss_mib"], ref["e2e"]["peak_rss_mib"]
        out.append(
            f"memory bounded by the block size: peak RSS {a:.0f} MiB at {fmt_size(largest)} vs {b:.0f} MiB at "
            f"{fmt_size(ref['n'])} (ratio {a / b:.2f} <= {RSS_GROWTH_LIMIT}) {verdict(a / b <= RSS_GROWTH_LIMIT)}"
        )
    else:
        out.append("memory bounded by the block size: not checked (needs a size above 10^6 to compare with 10^6)")
    return out


BEGIN_MARK = "<!-- bench-profile results: begin -->"
END_MARK = "<!-- bench-profile results: end -->"


def write_markdown(path: Path, text: str) -> None:
    """Write the report to `path`; in a file that has the result markers (docs/performance.md),
    replace only what lies between them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    if BEGIN_MARK in old and END_MARK in old:
        head, rest = old.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        path.write_text(f"{head}{BEGIN_MARK}\n{text}\n{END_MARK}{tail}")
    else:
        path.write_text(text + "\n")


# -- main ----------------------------------------------------------------------------------------
def parse_sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def main(argv=None) -> None:
    from soicurate.profiling.reader import DEFAULT_BLOCK_ROWS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e5,1e6,1e7", help="comma-separated example counts (default 1e5,1e6,1e7)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "soicurate-bench",
                   help="where generated runs are cached between invocations (default: %(default)s)")  # fmt: skip
    p.add_argument("--block-rows", type=int, default=DEFAULT_BLOCK_ROWS)
    p.add_argument("--small-block-rows", type=int, default=1 << 15,
                   help="a second end-to-end run with this block size shows how peak RSS follows it; 0 skips it")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="kernel timings: best of this many passes")
    p.add_argument("--e2e-repeats", type=int, default=3,
                   help="warm end-to-end calls per size up to 10^6 examples, best reported (larger sizes: one)")  # fmt: skip
    p.add_argument("--regenerate", action="store_true", help="regenerate the cached runs")
    p.add_argument("--loop-examples", type=int, default=20000, help="examples for the Python loop baseline")
    p.add_argument("--no-compile-timing", action="store_true", help="skip the empty-numba-cache first call")
    p.add_argument("--breakdown", type=float, default=None,
                   help="size whose warm end-to-end time is split into stages, each timed alone (default: the "
                        "largest size <= 1e6; 0 skips it)")  # fmt: skip
    p.add_argument("--markdown", type=Path,
                   help="also write the report (markdown) to this file; a file with the result markers "
                        "(docs/performance.md) gets only that section replaced")  # fmt: skip
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child_breakdown(spec) if spec.get("mode") == "breakdown" else child_e2e(spec)))
        return

    command = "python benchmarks/bench_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sizes = parse_sizes(args.sizes)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    env = environment()
    print(f"CPU: {env['cpu']} ({env['cpus_usable']} usable); numba threading layer {env['numba_threading_layer']}, "
          f"{env['numba_threads']} threads; load average {load_before}", flush=True)  # fmt: skip
    print(f"versions: python {env['python']}, numpy {env['numpy']}, numba {env['numba']}, pyarrow {env['pyarrow']}, "
          f"polars {env['polars']}, soicurate {env['soicurate']}", flush=True)  # fmt: skip
    warmup_run, _ = ensure_run(args.workdir, WARMUP_EXAMPLES, args.epochs, args.regenerate)

    rows = []
    for n in sizes:
        print(f"\n== {n:,} examples x {args.epochs} epochs", flush=True)
        run, gen_s = ensure_run(args.workdir, n, args.epochs, args.regenerate)
        if gen_s is not None:
            print(f"  generated in {gen_s:.1f} s", flush=True)
        row = {"n": n, "epochs": args.epochs, "run": str(run), "generate_s": gen_s}
        out = args.workdir / f"profile_{n}x{args.epochs}.parquet"

        repeats = args.e2e_repeats if n <= 10**6 else 1
        spec = {"run": str(run), "output": str(out), "block_rows": args.block_rows, "repeats": repeats}
        row["e2e"] = run_child(spec)
        e = row["e2e"]
        print(f"  end to end: cold {e['cold_s']:.2f} s, warm {e['warm_s']:.2f} s ({e['warm_cpu_s']:.2f} s CPU) "
              f"({n * args.epochs / e['warm_s']:.3g} ex-ep/s), peak RSS {e['peak_rss_mib']:.0f} MiB",
              flush=True)  # fmt: skip
        if args.small_block_rows:
            small = {**spec, "block_rows": args.small_block_rows, "repeats": 1, "warmup_run": str(warmup_run)}
            row["e2e_small"] = run_child(small)
            s = row["e2e_small"]
            print(f"  end to end with block_rows {args.small_block_rows:,}: {s['warm_s']:.2f} s, "
                  f"peak RSS {s['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        if not rows and not args.no_compile_timing:
            with tempfile.TemporaryDirectory(prefix="soicurate-bench-numba-") as cache:
                compile_env = {**os.environ, "NUMBA_CACHE_DIR": cache}
                spec_c = {**spec, "repeats": 1, "run": str(warmup_run)}
                c = run_child(spec_c, env=compile_env)
                row["compile_s"] = c["cold_s"]
                print(f"  first call with an empty numba cache (on {WARMUP_EXAMPLES} examples): {c['cold_s']:.2f} s",
                      flush=True)  # fmt: skip

        t = time.perf_counter()
        blocks = load_blocks(run, args.block_rows)
        print(f"  loaded {len(blocks)} blocks into memory in {time.perf_counter() - t:.1f} s", flush=True)
        row["kernel"] = time_kernels(blocks, args.repeats)
        k = row["kernel"]
        print(f"  kernel: compute_block {n * args.epochs / k['compute_block_s']:.3g} ex-ep/s, profile_block "
              f"{n * args.epochs / k['profile_block_s']:.3g}, "
              f"validate_block {n * args.epochs / k['validate_block_s']:.3g}, "
              f"fused {n * args.epochs / k['fused_s']:.3g}", flush=True)  # fmt: skip
        row["loop"] = time_loop(blocks, min(args.loop_examples, n))
        print(f"  python loop: {row['loop']['loop_ex_ep_per_s']:.3g} ex-ep/s on {row['loop']['loop_examples']:,} examples "
              f"({row['loop']['loop_s']:.2f} s)", flush=True)  # fmt: skip
        del blocks
        rows.append(row)

    breakdown = None
    target = args.breakdown if args.breakdown is not None else max([n for n in sizes if n <= 10**6] or [0])
    if target:
        n = int(target)
        print(f"\n== where the time goes: {n:,} x {args.epochs}, block_rows {args.block_rows:,} "
              "(CPU time of each stage alone)", flush=True)  # fmt: skip
        run, _ = ensure_run(args.workdir, n, args.epochs)
        spec = {"mode": "breakdown", "run": str(run), "warmup_run": str(warmup_run), "block_rows": args.block_rows,
                "output": str(args.workdir / f"profile_{n}x{args.epochs}.parquet")}  # fmt: skip
        breakdown = {"n": n, **run_child(spec)}

    text = report(env, rows, args, command, load_before, load_average(), breakdown)
    print("\n" + text)
    if args.markdown:
        write_markdown(args.markdown, text)
        print(f"\nwrote {args.markdown}")
    raw = args.workdir / "last-results.json"
    raw.write_text(json.dumps({"env": env, "rows": rows, "breakdown": breakdown, "command": command}, indent=2, default=str))


if __name__ == "__main__":
    main()
