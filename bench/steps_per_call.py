"""Train steps per jitted call: the library's step (`train.make_train_step`) run one step per
call against K steps per call (`train.steps_per_call`), time per step, interleaved repeats.

  python bench/steps_per_call.py [--k 4] [--repeats 3] [--rows REGEX] [--out FILE]

Rows: stage/<student>/<teachers mode>/<N>x<size>, paper widths, random inputs and
initial parameters (only the time is measured). Each repeat times one call of each form
back to back, interleaved (1, K, then K, 1, ...: bench/common.py); the table gives medians
of seconds per step and their ratio.
JSON goes to bench/results/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import common

common.on_path()

ROWS = (
    ("unet", "precomputed", 1, 256),
    ("unet", "precomputed", 8, 128),
    ("lan", "precomputed", 1, 256),
    ("bnn", "online", 1, 256),
)


def measure(student: str, mode: str, n: int, size: int, k: int, repeats: int) -> dict:
    import jax
    import optax
    from speed import stage_problem

    from sassid_jax import train
    from sassid_jax.training import sharding

    networks, stage, teachers, xs = stage_problem(student, mode, (k, n, size, size))
    mesh, tx = sharding.make_mesh(), optax.adam(3e-4)
    forms = {}
    for per_call in (1, k):
        state = train.init_state(networks, stage, tx, jax.random.key(0), size)
        step = train.make_train_step(networks, stage, tx, mesh, mode, several_steps=per_call > 1)
        x = xs if per_call > 1 else xs[0]
        state, metrics = step(state, teachers, x, True)  # compile and warm up
        jax.block_until_ready(metrics)
        forms[per_call] = {"step": step, "state": state, "x": x, "per_call": per_call}

    def run(form: dict) -> float:
        t = time.perf_counter()
        form["state"], metrics = form["step"](form["state"], teachers, form["x"], True)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - t) / form["per_call"]

    times, loads = common.interleaved(
        {str(p): (lambda f=f: run(f)) for p, f in forms.items()}, repeats
    )
    med = common.medians(times)
    one, many = med["1"], med[str(k)]
    return {
        "row": f"stage/{student}/{mode}/{n}x{size}",
        "k": k,
        "s_per_step_1": one,
        "s_per_step_k": many,
        "ratio": many / one,
        "times": times,
        "loadavg": max(a[0] for a in loads),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", default="", help="regex: keep only matching row names")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    started = common.timestamp()
    results = []
    for student, mode, n, size in ROWS:
        if re.search(args.rows, f"stage/{student}/{mode}/{n}x{size}"):
            r = measure(student, mode, n, size, args.k, args.repeats)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "times"}), flush=True)
    header = ("row", "1 step per call", f"{args.k} steps per call", "ratio", "load 1-min")
    rows = [
        (
            r["row"],
            f"{r['s_per_step_1']:.3f}",
            f"{r['s_per_step_k']:.3f}",
            f"{r['ratio']:.2f}",
            f"{r['loadavg']:.1f}",
        )
        for r in results
    ]
    print(
        f"Run {started}: medians of {args.repeats} interleaved repeats, seconds per step\n\n"
        + common.markdown_table(header, rows)
    )
    out = common.write_record(
        args.out or common.record_path("steps_per_call", started),
        {"started": started, "k": args.k, "machine": common.machine_info(), "rows": results},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
