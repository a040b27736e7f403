"""Validation of `inference.quality_estimate`: estimated against true PSNR, with ground truth.

Cases (each network plain and with the 8 px colour anchor f + G_8 * (x - f)):
- main: a trained run (default runs/default) on its held-out eval photos;
- sidd: a network trained on SIDD (default: the authors' LAN, --sidd-run) on the SIDD pair;
- bad: a run trained for a few steps (--bad-run, worse than its input), and a Gaussian blur
  (sigma 2 px) of the first main eval photo's clean image plus mild white noise (std 5).
The noise analysis is run on each noisy photo alone (what a user has). True PSNRs are of the
unrounded output of the same function on the whole photo; "true best w" minimises the true
MSE of the blend.

Usage: python bench/quality_estimate.py [--cases main,sidd,bad] [--networks unet,lan]
  [--main-run DIR] [--sidd-run DIR] [--bad-run DIR] [--probes 2] [--crops 4] [--out FILE]
Prints a markdown table; writes JSON to bench/results/quality_estimate-<time>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common
import jax.numpy as jnp
import numpy as np

common.on_path()

import ml_collections  # noqa: E402

from sassid_jax.inference import colour_anchor, predict  # noqa: E402
from sassid_jax.inference import quality_estimate as qe  # noqa: E402
from sassid_jax.io import checkpoints, photos  # noqa: E402
from sassid_jax.training.run_context import load_inputs  # noqa: E402

HEADER = (
    "case", "photo", "f", "noisy est/true", "output est/true", "gain est/true", "error dB",
    "w*", "blend est/true", "true best w",
)  # fmt: skip


def _anchored(fn: Any, sigma: float = 8.0) -> Any:
    """fn followed by the colour anchor (sassid_jax/inference/colour_anchor.py)."""
    return lambda x: colour_anchor.anchor(fn(x), x, sigma)


def network_fn(run: str, name: str) -> qe.DenoiseFn:
    """(1, h, w, 3) -> (1, h, w, 3) apply of a run's trained network."""
    module, params = checkpoints.load_network(run, name)
    return lambda x: module.apply({"params": params}, x)


def truth(fn: qe.DenoiseFn, noisy: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """True MSEs of the noisy photo and f(noisy) (whole photo), and the best blend weight."""
    out = predict.predict_image(fn, noisy).astype(np.float64)
    x, y = noisy.astype(np.float64), clean.astype(np.float64)
    diff = out - x
    best = float(np.clip(np.sum(diff * (y - x)) / max(np.sum(diff**2), 1e-12), 0, 1))
    # |f - y|^2 = |f - x|^2 - |n|^2 + 2 n . f: the realised covariance term SURE estimates
    c_real = np.mean(diff**2 + (x - y) * (x - y) - (out - y) ** 2) / -2 + np.mean((x - y) ** 2)
    return {"noisy": np.mean((x - y) ** 2), "output": np.mean((out - y) ** 2), "best_w": best,
            "out": out, "C_real": c_real}  # fmt: skip


def row(case: str, photo: str, label: str, fn: qe.DenoiseFn, noisy, clean, args) -> dict:
    start = time.perf_counter()
    est = qe.estimate_quality(fn, noisy, None, seed=0, probes=args.probes, crops=args.crops)
    t = truth(fn, noisy, clean)
    blended = qe.blend(t.pop("out"), noisy, est.blend_weight).astype(np.float64)
    true_blend = np.mean((blended - clean.astype(np.float64)) ** 2)
    p = qe.psnr_from_mse
    rec = {
        "case": case, "photo": photo, "f": label,
        "noisy_est": est.noisy_psnr, "noisy_true": p(t["noisy"]),
        "output_est": est.output_psnr, "output_true": p(t["output"]),
        "gain_est": est.gain_db, "gain_true": p(t["output"]) - p(t["noisy"]),
        "w": est.blend_weight, "blend_est": est.blend_psnr, "blend_true": p(true_blend),
        "best_w": t["best_w"], "D": est.distance, "s2": est.noise_variance,
        "C": est.divergence, "C_real": t["C_real"], "seconds": time.perf_counter() - start,
    }  # fmt: skip
    print(f"{case} {photo} {label}: {est.summary()}; true output {p(t['output']):.2f} dB",
          flush=True)  # fmt: skip
    return rec


def cells(r: dict[str, Any]) -> list[str]:
    def pair(a: str) -> str:
        return f"{r[a + '_est']:.2f} / {r[a + '_true']:.2f}"

    err = r["output_est"] - r["output_true"]
    return [r["case"], r["photo"], r["f"], pair("noisy"), pair("output"), pair("gain"),
            f"{err:+.2f}", f"{r['w']:.2f}", pair("blend"), f"{r['best_w']:.2f}"]  # fmt: skip


def functions(run: str, networks: list[str]) -> list[tuple[str, qe.DenoiseFn]]:
    out = []
    for name in networks:
        fn = network_fn(run, name)
        out += [(name, fn), (name + "+anchor", _anchored(fn))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="main,sidd,bad")
    ap.add_argument("--networks", default="unet,lan")
    shared = common.REPO.parent / "shared" / "data"
    ap.add_argument("--main-run", default="runs/default", help="a main-job run folder")
    ap.add_argument("--sidd-run", default=str(shared / "weights" / "official_LAN.pth"))
    ap.add_argument("--bad-run", default="", help="a run trained a few steps ('' = skip it)")
    ap.add_argument("--sidd-pair", default=str(shared / "sidd_pair"))
    ap.add_argument("--probes", type=int, default=2)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cases, networks = args.cases.split(","), args.networks.split(",")
    started = common.timestamp()
    rows = []
    config = ml_collections.ConfigDict(checkpoints.read_run_config(args.main_run))
    _, examples = load_inputs(config)
    pair = Path(args.sidd_pair)
    sidd = [photos.read_rgb8(pair / f) for f in ("noisy.png", "gt.png")]
    if "main" in cases:
        for label, fn in functions(args.main_run, networks):
            for ex in examples:
                rows.append(row("main", ex["name"], label, fn, ex["noisy"], ex["clean"], args))
    if "sidd" in cases:
        for label, fn in functions(args.sidd_run, ["lan"] if "pth" in args.sidd_run else networks):
            rows.append(row("sidd", "sidd_pair", label, fn, *sidd, args))
    if "bad" in cases:
        for label, fn in functions(args.bad_run, ["unet"]) if args.bad_run else ():
            rows.append(row("bad", "sidd_pair", label + " (few steps)", fn, *sidd, args))
        clean = examples[0]["clean"]
        noise = np.random.default_rng(0).normal(0, 5, clean.shape)
        mild = np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)
        blur = lambda x: colour_anchor.blur(x, 2.0)  # noqa: E731
        for label, fn in (("blur2", blur), ("blur2+anchor", _anchored(blur))):
            rows.append(row("bad", examples[0]["name"] + "+n5", label, fn, mild, clean, args))
    print(common.markdown_table(HEADER, [cells(r) for r in rows]))
    errors = [abs(r["output_est"] - r["output_true"]) for r in rows]
    print(f"largest |output error| {max(errors):.2f} dB over {len(rows)} rows")
    path = args.out or common.record_path("quality_estimate", started)
    common.write_record(path, {"started": started, "args": vars(args), "rows": rows,
                               "machine": common.machine_info()})  # fmt: skip


if __name__ == "__main__":
    jnp.zeros(1)  # initialise the backend before the timing of the first row
    main()
