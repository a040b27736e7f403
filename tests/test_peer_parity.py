"""Parity with AP-BSN's and AT-BSN's code: fixtures in ../shared/data/parity/peers (see its README).

Random-weight state_dicts saved by each authors' code load through our `.pth` reader; every
reference output is reproduced within 1e-5 x max|reference| at highest matmul precision (the
distillation loss, a scalar, within 1e-5 relative). A test skips, naming the file, only when a
fixture file is missing. `PYTHONPATH=. .venv/bin/python tests/test_peer_parity.py` prints the
table of docs/parity_peers.md.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from sassid_jax.io.torch_params import load_torch_params
from sassid_jax.methods import apbsn, atbsn
from sassid_jax.nn import make_network
from sassid_jax.nn.pd import pd_mosaic, pd_stack, pd_unmosaic

PEERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "parity" / "peers"
TOLERANCE = 1e-5  # x max|reference|
TEACHER_SIZES = (0, 1, 3, 5, 9, 11)


def _nhwc(a: np.ndarray) -> np.ndarray:
    """NCHW (or (T, N, C, H, W)) -> NHWC (or (T, N, H, W, C)); scalars unchanged."""
    if a.ndim < 4:
        return a
    return np.moveaxis(a, -3, -1)


def _require(*names: str) -> None:
    for name in names:
        if not (PEERS / name).is_file():
            pytest.skip(f"peer parity fixture {PEERS / name} is missing")


@functools.cache
def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(PEERS / name) as f:
        return {k: _nhwc(v) for k, v in f.items()}


@functools.cache
def _apbsn_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (ours, reference)} of AP-BSN: PD, DBSNl, training forward, denoise +- R3."""
    ref = _npz("apbsn_reference.npz")
    module = make_network("dbsnl", width=16, num_blocks=2)
    params = load_torch_params(PEERS / "apbsn_c16_m2_seed0.pth", "dbsnl", module)

    def bsn(z: jax.Array) -> jax.Array:
        return module.apply({"params": params}, z)

    with jax.default_matmul_precision("highest"):
        got = {
            "pd5_pad2": pd_mosaic(ref["x120"], 5, 2),
            "pd5_pad2_up": pd_unmosaic(ref["pd5_pad2"], 5, 2),
            "pd2_pad2": pd_mosaic(ref["x64"], 2, 2),
            "bsn_x64": jax.jit(bsn)(ref["x64"]),
            "train_forward_pd5_x120": jax.jit(functools.partial(apbsn.train_forward, bsn))(
                ref["x120"]
            ),
            "denoise_nor3_x_66x70": jax.jit(
                lambda x: apbsn.denoise(bsn, x, factor=2, pad=2, r3_repeats=0)
            )(ref["x_66x70"]),
            "denoise_r3_x64": jax.jit(
                lambda x, u: apbsn.denoise(bsn, x, factor=2, pad=2, r3_prob=0.16, uniforms=u)
            )(ref["x64"], ref["r3_uniforms_x64"]),
        }
    return {k: (np.asarray(v), ref[k]) for k, v in got.items()}


@functools.cache
def _atbsn_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (ours, reference)} of AT-BSN: teacher at six blind sizes, student, loss."""
    ref = _npz("atbsn_reference.npz")
    teacher = make_network("bnn", width=16)
    teacher_params = load_torch_params(PEERS / "atbsn_c16_seed1.pth", "bnn", teacher)
    student = make_network("atbsn_student", width=16)
    student_params = load_torch_params(
        PEERS / "atbsn_student_c16_seed2.pth", "atbsn_student", student
    )

    def teach(x: jax.Array, b: int) -> jax.Array:
        return teacher.apply({"params": teacher_params}, x, b)

    @jax.jit
    def run(x: jax.Array) -> tuple[list[jax.Array], jax.Array, jax.Array]:
        outs = atbsn.teacher_outputs(teach, x, atbsn.DISTILL_BLIND_SIZES)
        s = student.apply({"params": student_params}, x)
        return outs, s, atbsn.distillation_loss(s, outs)

    with jax.default_matmul_precision("highest"):
        outs, s, loss = run(ref["x64"])
    by_size = dict(zip(atbsn.DISTILL_BLIND_SIZES, outs, strict=True))
    cases = {f"teacher_hole{b}_x64": by_size[b] for b in TEACHER_SIZES}
    cases |= {"student_x64": s, "distill_loss_x64": loss}
    return {k: (np.asarray(v), ref[k]) for k, v in cases.items()}


@functools.cache
def _pd_stack_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{case: (ours, reference)}: PD 2 with the sub-images on the batch axis, as TBSN's code
    stacks them (the layout only; TBSN's networks come with the next peer)."""
    ref = _npz("tbsn_reference.npz")
    return {"pd2_stack_x128": (np.asarray(pd_stack(ref["x128"], 2, 0)), ref["pd2_stack_x128"])}


APBSN_FILES = ("apbsn_c16_m2_seed0.pth", "apbsn_reference.npz")
ATBSN_FILES = ("atbsn_c16_seed1.pth", "atbsn_student_c16_seed2.pth", "atbsn_reference.npz")
APBSN_CASES = (
    "pd5_pad2",
    "pd5_pad2_up",
    "pd2_pad2",
    "bsn_x64",
    "train_forward_pd5_x120",
    "denoise_nor3_x_66x70",
    "denoise_r3_x64",
)
ATBSN_CASES = (*(f"teacher_hole{b}_x64" for b in TEACHER_SIZES), "student_x64", "distill_loss_x64")


def _max_diff(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max|got - ref|, the tolerance TOLERANCE x max|ref|); shapes must agree."""
    assert got.shape == ref.shape, f"shape {got.shape} != reference {ref.shape}"
    return float(np.abs(got - ref).max()), TOLERANCE * float(np.abs(ref).max())


@pytest.mark.parametrize("case", APBSN_CASES)
def test_apbsn_parity(case):
    _require(*APBSN_FILES)
    diff, tol = _max_diff(*_apbsn_cases()[case])
    assert diff <= tol, f"{case}: max|diff| = {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("case", ATBSN_CASES)
def test_atbsn_parity(case):
    _require(*ATBSN_FILES)
    diff, tol = _max_diff(*_atbsn_cases()[case])
    assert diff <= tol, f"{case}: max|diff| = {diff:.3g} > {tol:.3g}"


def test_pd_stack_layout_parity():
    _require("tbsn_reference.npz")
    diff, tol = _max_diff(*_pd_stack_cases()["pd2_stack_x128"])
    assert diff <= tol, f"pd2_stack_x128: max|diff| = {diff:.3g} > {tol:.3g}"


def _table(groups: dict[str, Callable[[], dict]]) -> str:
    rows = ["| case | max abs diff | tolerance (1e-5 x max abs ref) |", "|---|---|---|"]
    for prefix, cases in groups.items():
        for case, (got, ref) in cases().items():
            diff, tol = _max_diff(got, ref)
            rows.append(f"| {prefix}: `{case}` | {diff:.3g} | {tol:.3g} |")
    return "\n".join(rows)


if __name__ == "__main__":
    groups = {"AP-BSN": _apbsn_cases, "AT-BSN": _atbsn_cases, "TBSN's PD": _pd_stack_cases}
    sys.exit(print(_table(groups)))
