"""bench/accelerator.py: a tiny CPU run has every section with positive numbers; its helpers."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the bench scripts import their siblings by name
import accelerator  # noqa: E402
import speed  # noqa: E402

SECTIONS = ("parity", "speed", "recipe", "input", "scaling")
HAS_TORCH = importlib.util.find_spec("torch") is not None


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(record, table) of `python bench/accelerator.py --tiny --device cpu`."""
    out = tmp_path_factory.mktemp("accelerator")
    cmd = [sys.executable, "bench/accelerator.py", "--tiny", "--device", "cpu", f"--out={out}"]
    subprocess.run(cmd, cwd=REPO, check=True, timeout=600)
    (path,) = out.glob("accelerator-*.json")
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


@pytest.mark.slow  # the whole bench in a child process (a nested pytest of the parity tests)
def test_tiny_run_has_every_section_with_positive_numbers(tiny_run):
    record, table = tiny_run
    sections = record["sections"]
    assert tuple(sections) == SECTIONS
    assert all(positive(s["seconds"]) or s["seconds"] == 0.0 for s in sections.values())
    parity = sections["parity"]
    assert parity["failed"] == 0 and parity["passed"] + parity["skipped"] >= 1
    if HAS_TORCH:
        (row,) = sections["speed"]["rows"]  # --tiny: the U-Net forward in float32
        assert row["row"] == "fwd/unet/f32/2x32" and row["dtype"] == "float32"
        assert all(positive(row[k]) for k in ("jax_ms", "torch_ms", "ratio"))
    else:
        assert "PyTorch is not installed" in " ".join(sections["speed"]["notes"])
    recipe = sections["recipe"]
    (stage,) = recipe["rows"]
    assert stage["row"] == "stage/unet/precomputed/f32/2x32"
    assert all(positive(stage[k]) for k in ("ms_per_step", "steps_per_s", "stage_hours"))
    assert len(recipe["projection"]) == 4 and all(p["hours"] is None for p in recipe["projection"])
    inp = sections["input"]
    assert positive(inp["crops_per_s"]) and positive(inp["tiles"])
    assert inp["demand_crops_per_s"] == pytest.approx(2 * stage["steps_per_s"])
    assert inp["keeps_up"] == (inp["crops_per_s"] >= inp["demand_crops_per_s"])
    assert sections["scaling"]["rows"] or "no scaling" in sections["scaling"]["notes"][0]
    meta = record["meta"]
    assert (meta["crop"], meta["batch"], meta["width"], meta["device"]) == (32, 2, 4, "cpu")
    assert table.startswith("Accelerator check") and "stage/unet/precomputed/f32/2x32" in table


def test_projection_sums_the_three_stages():
    rates = {("bnn", "", "float32"): 10.0, ("lan", "online", "float32"): 20.0}
    rates[("unet", "online", "float32")] = 40.0
    rates[("lan", "precomputed", "float32")] = 40.0
    by = {(p["dtype"], p["teachers"]): p for p in accelerator.project(rates, steps=3600)}
    assert by[("float32", "online")]["hours"] == pytest.approx(1 / 10 + 1 / 20 + 1 / 40)
    assert by[("float32", "precomputed")] == {
        "dtype": "float32", "teachers": "precomputed", "hours": None, "missing": "unet"
    }  # fmt: skip
    assert by[("bfloat16", "online")]["missing"] == "bnn,lan,unet"


def test_rows_names_and_order():
    pairs, stages = accelerator.all_rows("8x256", 48)
    assert len(pairs) == 12 and len(stages) == 10
    assert pairs[0].name == "train/bnn/f32/8x256" and pairs[-1].name == "fwd/unet/bf16/8x256"
    assert [r.name for r in stages[:3]] == [
        "stage/bnn/f32/8x256", "stage/lan/online/f32/8x256", "stage/unet/online/f32/8x256"
    ]  # fmt: skip
    assert all(r.nhw == (8, 256) and r.width == 48 for r in pairs + stages)


def test_tiny_defaults_yield_to_flags():
    args = accelerator.parse_args(["--tiny", "--crop", "64", "--device", "cpu"])
    assert (args.crop, args.batch, args.width, args.repeats) == (64, 2, 4, 2)
    args = accelerator.parse_args([])
    assert (args.crop, args.batch, args.width, args.device) == (256, 8, 48, "cuda")


def test_clock_shares_the_time_left():
    clock = accelerator.Clock(100.0)
    start = time.perf_counter()
    end = clock.section("parity")
    assert end - start == pytest.approx(100 * accelerator.SHARES["parity"], abs=0.5)
    clock.deadline = time.perf_counter() + 20.0  # the later sections share what is left
    end = clock.section("speed")
    left = sum(accelerator.SHARES[k] for k in SECTIONS[1:])
    assert end - time.perf_counter() == pytest.approx(
        20 * accelerator.SHARES["speed"] / left, abs=0.5
    )


def test_random_init_keeps_shapes_and_zeroes_the_optimizer():
    import jax
    import optax

    from sassid_jax.methods.stages import make_stage
    from sassid_jax.nn import make_network
    from sassid_jax.training import train_step

    networks = {"unet": make_network("unet", width=4)}
    stage, tx = make_stage("unet", ("unet",), ("unet",)), optax.adam(1e-3)
    shapes = jax.eval_shape(
        lambda k: train_step.init_state(networks, stage, tx, k, 32), jax.random.key(0)
    )
    state = speed.random_init(shapes)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes
    )
    kernels = [a for a in jax.tree.leaves(state["params"]) if a.ndim >= 2]
    assert kernels and all(float(abs(a).max()) > 0 for a in kernels)
    assert all(float(abs(a).max()) == 0 for a in jax.tree.leaves(state["opt_state"]))


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_torch_bfloat16_rows_run_under_autocast():
    import torch

    def conv_dtype(row: speed.Row) -> torch.dtype:
        with speed._autocast(row, "cpu")():
            return torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1)).dtype

    row = speed.Row("train/unet/bf16/1x32", "train", "unet", "1x32", width=4, dtype="bfloat16")
    assert conv_dtype(row) == torch.bfloat16
    assert conv_dtype(speed.Row("fwd/unet/f32/1x32", "fwd", "unet", "1x32")) == torch.float32
    run, _ = speed.build_torch(row, "cpu")
    run()  # forward and loss under autocast, backward and Adam outside


def tiny_tbsn_rows() -> list[speed.Row]:
    """The TBSN rows of `speed.py --tbsn-width 16 --tbsn-blocks 1` at 1x32 (crops 160^2)."""
    shapes = {"fwd": "1x32", "train": "1x32", "mem": "1x32"}
    return [r for r in speed.all_rows([], shapes, 16, 1) if r.net == "tbsn"]


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_torch_tbsn_loads_the_fixture_strictly_and_matches_the_reference():
    import torch
    import torch_nets
    import torch_parity

    data = torch_parity.DEFAULT_DATA
    for name in (torch_parity.TBSN_FIXTURE, torch_parity.TBSN_REFERENCE):
        if not (data / name).is_file():
            pytest.skip(f"TBSN parity fixture {data / name} is missing")
    net = torch_parity.load_tbsn(data)  # load_state_dict(strict=True)
    assert {"patch_embed.proj.mask", "latent.0.spatial_attn.fixed_pos_emb.attention_mask"} <= {
        name for name, _ in net.named_buffers()
    }
    diff, tol = torch_parity.tbsn_max_diff(data)
    assert diff <= tol, f"TorchTBSN: max|diff| = {diff:.3g} > {tol:.3g}"
    with torch.device("meta"):  # shapes only, no memory
        published = torch_nets.TorchTBSN()
    assert sum(p.numel() for p in published.parameters()) == 12_746_780


def test_tbsn_rows_by_default_and_their_sizes():
    names = [r.name for r in speed.all_rows(["1x256"]) if r.net == "tbsn"]
    assert names == ["fwd/tbsn/4x64", "train/tbsn/4x64", "mem/tbsn/1x256"]
    assert speed.tbsn_size() == {}  # the published TBSN: the modules' defaults
    assert speed.tbsn_size(16, 1) == {
        "dim": 16,
        "num_blocks": (1, 1, 1),
        "num_refinement_blocks": 1,
    }
    assert speed.tbsn_adamw() == {
        "lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01
    }  # fmt: skip
    assert speed.target_of({"kind": "fwd", "net": "tbsn"}) is None


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_tbsn_rows_build_at_a_tiny_width():
    fwd, train, mem = tiny_tbsn_rows()
    run, _ = speed.build_torch(fwd, "cpu")
    run()
    # as measure_memory: a fresh process builds and runs one PyTorch train step
    fresh = speed.Worker("torch", 1, check=False)
    try:
        assert fresh.ask("memory", mem)["bytes"] > 0
    finally:
        fresh.close()
    lowered, (_, teachers, batch, _) = speed.lowered_stage(train)  # JAX: traced, not compiled
    assert teachers == {} and batch.shape == (1, 160, 160, 3)
    assert lowered.out_info[1]["loss"].shape == ()


@pytest.mark.slow  # three XLA compilations (TBSN forward, train step twice): about 30 s on 2 cores
def test_tbsn_jax_rows_compile_and_measure():
    fwd, train, mem = tiny_tbsn_rows()
    for row in (fwd, train):
        run, info = speed.build_jax(row)
        run()
        assert info["parameters"] == 392_971 and info["flops"] > 0
    memory = speed.jax_memory(mem)
    assert memory["bytes"] == memory["temp"] + memory["argument"] + memory["output"] > 0
