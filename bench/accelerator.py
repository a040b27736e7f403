"""The accelerator check: one command, about 7 minutes on one GPU, every number a GPU run needs.

  python bench/accelerator.py [--device cuda|cpu] [--crop 256] [--batch 8] [--width 48]
      [--repeats 5] [--inner 10] [--budget 420] [--rows REGEX] [--parity-k EXPR]
      [--image 1024x1536] [--out bench/results]
  python bench/accelerator.py --tiny --device cpu        # a smoke run (tests)

Sections, in this order, each time-boxed (a share of --budget seconds; time a section leaves
unused goes to the later ones; a row that would overrun its section is skipped with a note):
  parity   tests/test_parity.py in a child process with JAX_DEFAULT_MATMUL_PRECISION=highest:
           passed / failed / skipped counts (skipped: ../shared/data is absent);
  speed    JAX against PyTorch, side by side in bench/speed.py's worker processes: train and
           forward steps of the three networks, float32 (each framework's default precision:
           TF32 convolutions on Ampere and later) and bfloat16 (our compute dtype against
           torch.autocast), medians of interleaved repeats of --inner calls, JAX/PyTorch;
           a note instead where PyTorch is not installed;
  recipe   steps/s of each stage of the paper recipe with the library's step
           (`train.make_train_step`; --batch x --crop^2, BNN and U-Net --width, LAN 64), online
           and precomputed teachers, float32 then bfloat16; the projected time of 3 x 400k
           steps (precomputing the teachers not included);
  input    crops/s of the tile pipeline (`sassid_jax.data.tiles`) on two fake SIDD-Medium
           photos of --image pixels (bench/sidd_crops.py) against the fastest stage's demand
           (steps/s x batch);
  scaling  the U-Net stage on 1, 2, 4, ... devices (bench/scaling.py's child, batch x devices
           per step); a note where there is one device.
Rows are named <kind>/<net>[/<teachers>]/<f32|bf16>/<N>x<crop>; --rows keeps those matching.
--tiny: crop 32, batch 2, width 4, 2 repeats of one call, a few rows, the parity tests without
networks: a CPU smoke test. Writes <out>/accelerator-<time>.json (bench/common.py's record
writer) and .md (the table); prints the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

import common

common.on_path()
import speed  # noqa: E402

STAGE_STEPS, DTYPES, MODES = 400_000, ("float32", "bfloat16"), ("online", "precomputed")
TAG = {"float32": "f32", "bfloat16": "bf16"}
SHARES = {"parity": 0.15, "speed": 0.38, "recipe": 0.27, "input": 0.10, "scaling": 0.10}
ROW_BUDGET = 8.0  # seconds of timed repeats per row (fewer repeats where a row is slow)
FIELDS = ("crop", "batch", "width", "repeats", "inner", "budget", "rows", "parity_k", "image")
FULL = (256, 8, 48, 5, 10, 420.0, "", "", "1024x1536")
TINY = (32, 2, 4, 2, 1, 240.0, r"^(fwd/unet/f32|stage/unet/precomputed/f32)/",
        "not network", "512x768")  # fmt: skip


class Clock:
    """The run's deadline shared out over the sections still to run, in proportion to SHARES."""

    def __init__(self, budget: float) -> None:
        self.deadline, self.left = time.perf_counter() + budget, dict(SHARES)

    def section(self, name: str) -> float:
        """The end (perf_counter seconds) of section `name`, which starts now."""
        share, now = self.left.pop(name), time.perf_counter()
        return now + max(0.0, self.deadline - now) * share / (share + sum(self.left.values()))


def new_section() -> dict:
    return {"rows": [], "skipped": [], "notes": [], "seconds": 0.0}


def run_rows(rows: list, end: float, measure: Callable, out: dict) -> None:
    """Measure rows in order, skipping (named in out["skipped"]) each that would end after
    `end`, estimated by the previous row's duration. An error ends the section."""
    last = 0.0
    for i, row in enumerate(rows):
        if time.perf_counter() + last > end:
            out["skipped"].append(row.name)
            continue
        start = time.perf_counter()
        try:
            out["rows"].append(measure(row))
        except (Exception, SystemExit) as e:  # a worker that died exits through SystemExit
            out["notes"].append(f"{row.name} failed, section ended: {type(e).__name__}: {e}")
            out["skipped"] += [r.name for r in rows[i + 1 :]]
            return
        last = time.perf_counter() - start
        print(f"  {row.name}: {last:.1f} s", flush=True)


def parity(end: float, k: str) -> dict:
    """tests/test_parity.py at the highest matmul precision: passed / failed / skipped."""
    out = new_section()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "parity.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_parity.py", f"--junitxml={xml}", *(["-k", k] if k else [])]  # fmt: skip
        env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
        try:
            wait = max(1.0, end - time.perf_counter())
            subprocess.run(cmd, cwd=common.REPO, env=env, timeout=wait)
        except subprocess.TimeoutExpired:
            out["notes"].append("the parity tests overran the section's budget and were stopped")
            return out
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n = {a: int(suite.get(a, 0)) for a in ("tests", "failures", "errors", "skipped")}
    out.update(failed=n["failures"] + n["errors"], skipped=n["skipped"], selected=k or "all")
    out["passed"] = n["tests"] - out["failed"] - out["skipped"]
    if out["skipped"]:
        out["notes"].append("tests skipped: is the parity data (../shared/data) absent?")
    return out


def all_rows(shape: str, width: int) -> tuple[list[speed.Row], list[speed.Row]]:
    """(JAX/PyTorch rows: train before forward, recipe stage rows), float32 before bfloat16."""
    pairs, stages = [], []
    for kind in ("train", "fwd"):
        for dtype in DTYPES:
            for net in speed.NAMES:
                name = f"{kind}/{net}/{TAG[dtype]}/{shape}"
                pairs.append(speed.Row(name, kind, net, shape, width=width, dtype=dtype))
    for dtype in DTYPES:
        for net, mode in [("bnn", "")] + [(n, m) for m in MODES for n in ("lan", "unet")]:
            name = "/".join(p for p in ("stage", net, mode, TAG[dtype], shape) if p)
            stages.append(speed.Row(name, "stage", net, shape, mode or "online", width, dtype))
    return pairs, stages


def measure_pair(row: speed.Row, jx: speed.Worker, pt: speed.Worker, repeats: int) -> dict:
    """bench/speed.py's row: JAX against PyTorch, interleaved medians (plus milliseconds)."""
    r = speed.measure_row(row, jx, pt, min(2, repeats), repeats, ROW_BUDGET)
    return {**r, "dtype": row.dtype, "jax_ms": 1e3 * r["jax_s"], "torch_ms": 1e3 * r["torch_s"]}


def measure_stage(row: speed.Row, jx: speed.Worker, repeats: int) -> dict:
    """The JAX worker alone on one stage row: median seconds per step, steps/s."""
    setup = jx.ask("setup", row)["setup_s"]
    times, loads = common.interleaved(
        {"jax": lambda: jx.ask("run")}, min(2, repeats), repeats, ROW_BUDGET
    )
    jx.ask("drop")
    s = common.medians(times)["jax"]
    mode = row.mode if row.net != "bnn" else ""
    hours, load = STAGE_STEPS * s / 3600, max(a[0] for a in loads)
    return {"row": row.name, "net": row.net, "mode": mode, "dtype": row.dtype,
            "ms_per_step": 1e3 * s, "steps_per_s": 1 / s, "stage_hours": hours,
            "setup_s": setup, "times": times["jax"], "loadavg": load}  # fmt: skip


def project(rates: Mapping[tuple[str, str, str], float], steps: int = STAGE_STEPS) -> list:
    """Hours of the whole recipe (bnn, lan, unet stages of `steps` each) per (dtype, teachers)
    from steps/s keyed (net, teachers, dtype) (the BNN's teachers: ""); `missing` names the
    stages not measured (then hours is None). Precomputing the teachers is not included."""
    out = []
    for dtype in DTYPES:
        for mode in MODES:
            keys = [("bnn", "", dtype), ("lan", mode, dtype), ("unet", mode, dtype)]
            missing = ",".join(k[0] for k in keys if k not in rates)
            hours = None if missing else sum(steps / rates[k] for k in keys) / 3600
            out.append({"dtype": dtype, "teachers": mode, "hours": hours, "missing": missing})
    return out


def input_pipeline(args, end: float, demand: float | None) -> dict:
    """Crops/s of `tiles.tile_batches` on fake SIDD-Medium tiles against `demand` crops/s."""
    import sidd_crops

    from sassid_jax.data import sources, tiles

    out, (h, w) = new_section(), (int(v) for v in args.image.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        sidd_crops.write_download(Path(tmp) / "dl", 2, h, w)
        source = sources.sidd_medium_tiles(sidd_crops.tiles_config(Path(tmp)))
        rate = sidd_crops.tile_crops_per_s(
            source, args.repeats, sidd_crops.STEPS, args.batch, args.crop
        )
    out.update(crops_per_s=rate, threads=tiles.default_threads(), tiles=len(source))
    out.update(demand_crops_per_s=demand, keeps_up=None if demand is None else rate >= demand)
    if demand is None:
        out["notes"].append("no stage was measured: nothing to compare the input with")
    if time.perf_counter() > end:
        out["notes"].append(f"overran its budget by {time.perf_counter() - end:.0f} s")
    return out


def scaling(args, end: float, hello: Mapping) -> dict:
    """The U-Net stage step on 1, 2, 4, ... devices (one child process each), weak scaling."""
    out, count = new_section(), hello.get("device_count", 1)
    if count < 2:
        out["notes"].append(f"{count} device ({hello.get('devices', '?')}): no scaling to measure")
        return out
    for n in (d for d in (1, 2, 4, 8, 16, 32) if d <= count):
        gpu = hello.get("platform") == "gpu"
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(n)))} if gpu else {
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}  # fmt: skip
        flags = ["--child", f"--batch={args.batch * n}", f"--crop={args.crop}",
                 f"--width={args.width}", f"--repeats={args.repeats}"]  # fmt: skip
        try:
            wait = end - time.perf_counter()
            r = common.run_child(common.BENCH / "scaling.py", flags, timeout=wait, **env)
        except (subprocess.SubprocessError, ValueError) as e:
            out["notes"].append(f"{n} devices: {type(e).__name__}: {e}")
            break
        r.update(
            ms_per_step=1e3 * r["median_step_s"], crops_per_s=r["steps_per_s"] * args.batch * n
        )
        r["efficiency"] = r["crops_per_s"] / (n * (out["rows"] or [r])[0]["crops_per_s"])
        out["rows"].append(r)
    return out


TABLES = {  # section: (header, one row's cells as a format string over its record)
    "speed": (("row", "JAX ms", "PyTorch ms", "JAX/PyTorch"),
              "{row}|{jax_ms:.2f}|{torch_ms:.2f}|{ratio:.2f}"),
    "recipe": (("stage", "ms/step", "steps/s", "400k steps (h)"),
               "{row}|{ms_per_step:.2f}|{steps_per_s:.1f}|{stage_hours:.2f}"),
    "projection": (("dtype", "teachers", "recipe 3 x 400k (h)", "stages not measured"),
                   "{dtype}|{teachers}|{hours}|{missing}"),
    "scaling": (("devices", "ms/step", "crops/s", "efficiency"),
                "{devices}|{ms_per_step:.2f}|{crops_per_s:.0f}|{efficiency:.2f}"),
}  # fmt: skip


def format_report(rec: dict) -> str:
    """The plain-text/markdown report: a summary line, parity, the tables, input, notes."""
    m, s = rec["meta"], rec["sections"]
    jx, pt, p, i = m.get("jax", {}), m.get("torch", {}), s["parity"], s["input"]
    head = (f"Accelerator check {m['started']} ({m['wall_s'] / 60:.1f} min): JAX "
            f"{jx.get('version', '?')} on {jx.get('devices', '?')}, PyTorch "
            f"{pt.get('version', 'absent')} on {pt.get('devices', '-')}; {m['machine']['cpu']}, "
            f"{m['machine']['affinity']} cores. Batch {m['batch']} x {m['crop']}^2, width "
            f"{m['width']}, medians of up to {m['repeats']} interleaved repeats of {m['inner']} "
            f"calls.\n\nParity at highest precision ({p.get('selected', '-')}): "
            f"{p.get('passed', '-')} passed, {p.get('failed', '-')} failed, "
            f"{p.get('skipped', '-')} skipped.")  # fmt: skip
    lines = [head, ""]
    projection = [{**r, "hours": "-" if r["hours"] is None else f"{r['hours']:.1f}"}
                  for r in s["recipe"].get("projection", [])]  # fmt: skip
    for name, rows in (("speed", s["speed"]["rows"]), ("recipe", s["recipe"]["rows"]),
                       ("projection", projection), ("scaling", s["scaling"]["rows"])):  # fmt: skip
        header, cells = TABLES[name]
        if rows:
            table = [cells.format(**r).split("|") for r in rows]
            lines += [common.markdown_table(header, table), ""]
    if "crops_per_s" in i:
        need = i["demand_crops_per_s"]
        verdict = "keeps up" if i["keeps_up"] else "**does not keep up**"
        lines += [f"Input: {i['crops_per_s']:.0f} crops/s ({i['threads']} threads) against "
                  + ("no measured demand" if need is None else f"{need:.0f} consumed: {verdict}")
                  + ".", ""]  # fmt: skip
    for name, sec in s.items():
        skipped = [f"skipped (time budget): {', '.join(sec['skipped'])}"] if sec["skipped"] else []
        lines += [f"- {name} ({sec['seconds']:.0f} s): {n}" for n in sec["notes"] + skipped]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and rows (CPU smoke test)")
    for field, value in zip(FIELDS, FULL, strict=True):
        ap.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=None)
    ap.add_argument("--out", type=Path, default=common.RESULTS, help="folder of the results")
    args = ap.parse_args(argv)
    for field, value in zip(FIELDS, TINY if args.tiny else FULL, strict=True):
        if getattr(args, field) is None:
            setattr(args, field, value)
    return args


def start_workers(args, out: dict) -> dict[str, speed.Worker]:
    """bench/speed.py's JAX worker and, where PyTorch is installed, its PyTorch worker."""
    workers, threads = {}, common.available_cores()
    try:
        workers["jax"] = speed.Worker("jax", threads, args.device, args.inner)
        if importlib.util.find_spec("torch") is None:
            out["notes"].append("PyTorch is not installed: no JAX/PyTorch rows")
        else:
            check = not args.tiny  # the parity data checks paper-size networks: seconds
            workers["torch"] = speed.Worker("torch", threads, args.device, args.inner, check)
    except (Exception, SystemExit) as e:  # a worker that dies at start exits the parent
        out["notes"].append(f"a worker did not start: {type(e).__name__}: {e}")
    return workers


def close(worker: speed.Worker) -> None:
    try:
        worker.close()
    except (Exception, SystemExit):
        worker.proc.kill()


def main(argv: list[str] | None = None) -> Path:
    """Run every section; returns the JSON record's path (the table beside it, .md)."""
    args, t0, started = parse_args(argv), time.perf_counter(), common.timestamp()
    # Workers and children inherit these: JAX stays on the CPU for --device cpu, and on a GPU
    # takes half the memory, leaving the rest to PyTorch's worker.
    os.environ.update({"JAX_PLATFORMS": "cpu"} if args.device == "cpu" else {})
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    clock, sections, workers, hello = Clock(args.budget), {}, {}, {}
    pairs, stages = (
        [r for r in rows if re.search(args.rows, r.name)]
        for rows in all_rows(f"{args.batch}x{args.crop}", args.width)
    )

    def speed_section(end: float) -> dict:
        out = new_section()
        workers.update(start_workers(args, out))
        hello.update({k: w.hello for k, w in workers.items()})
        if "torch" in workers:
            jx, pt = workers["jax"], workers["torch"]
            run_rows(pairs, end, lambda r: measure_pair(r, jx, pt, args.repeats), out)
            close(workers.pop("torch"))
        return out

    def recipe_section(end: float) -> dict:
        out = new_section()
        if "jax" in workers:
            jx = workers["jax"]
            run_rows(stages, end, lambda r: measure_stage(r, jx, args.repeats), out)
            close(workers.pop("jax"))
        rates = {(r["net"], r["mode"], r["dtype"]): r["steps_per_s"] for r in out["rows"]}
        return {**out, "projection": project(rates)}

    def demand() -> float | None:
        fastest = max((r["steps_per_s"] for r in sections["recipe"]["rows"]), default=None)
        return None if fastest is None else fastest * args.batch

    for name, run in (
        ("parity", lambda end: parity(end, args.parity_k)),
        ("speed", speed_section),
        ("recipe", recipe_section),
        ("input", lambda end: input_pipeline(args, end, demand())),
        ("scaling", lambda end: scaling(args, end, hello.get("jax", {}))),
    ):
        print(f"[{name}]", flush=True)
        start, end = time.perf_counter(), clock.section(name)
        try:
            result = run(end)
        except Exception as e:  # one failed section must not cost the others their results
            result = {**new_section(), "notes": [f"failed: {type(e).__name__}: {e}"]}
        sections[name] = {**result, "seconds": time.perf_counter() - start}
    for worker in workers.values():  # left by a section that failed
        close(worker)
    meta = {"started": started, "wall_s": time.perf_counter() - t0, "command": " ".join(sys.argv),
            "machine": common.machine_info(), "budget_s": args.budget, **hello,
            **{k: getattr(args, k) for k in ("device", *FIELDS[:5])}}  # fmt: skip
    record = {"meta": meta, "sections": sections}
    table = format_report(record)
    path = common.write_record(args.out / f"accelerator-{started.replace(':', '')}.json", record)
    common.write_text(path.with_suffix(".md"), table)
    print("\n" + table + f"\nwrote {path} and {path.with_suffix('.md')}", flush=True)
    return path


if __name__ == "__main__":
    main()
