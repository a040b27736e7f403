"""JAX (sassid_jax) against PyTorch (bench/torch_nets.py), side by side, on this machine.

  python bench/speed.py [--quick] [--rows REGEX] [--readme] [--out FILE]
  python bench/speed.py --device cuda --rows '^(fwd|train|stage)' --inner 20   # on a GPU
  python bench/speed.py --from-json bench/results/speed-....json [--readme]

Rows (paper widths: BNN C=48 b=9, LAN 64, U-Net C=48; shapes 1x256^2 and 8x128^2):
  fwd/<net>/<shape>      forward pass (PyTorch under no_grad);
  train/<net>/<shape>    the network's own train step: L1(net(x), target) + Adam (for the BNN
                         target = x: this IS stage 1);
  stage/<lan|unet>/<online|precomputed>/<shape>   the full stage step of `sassid_jax.train`
                         (`make_train_step`): teachers run forward on every batch ("online",
                         the paper's form) or arrive precomputed with the batch
                         (sassid_jax/training/teacher_cache.py); PyTorch does the same two things;
  fwd/tbsn/4x64          TBSN's forward (the published size: widths 48/96/192, 24 blocks)
                         against bench/torch_nets.py's TorchTBSN;
  train/tbsn/4x64        the stage step of configs/tbsn.py at that size: crops of 5x the
                         side, the network on their first PD-5 sub-image (the row's shape), L1
                         to it, AdamW at the config's lr and weight decay; PyTorch the same
                         with torch.optim.AdamW (the published 4x128: --tbsn-train 4x128);
  mem/tbsn/1x256         the memory of one such train step (not timed): JAX the compiled
                         step's memory_analysis() temp + argument + output bytes (nothing runs),
                         PyTorch the peak RSS of a fresh worker process over one step minus its
                         RSS before (on CUDA: torch.cuda.max_memory_allocated);
  ceil/matmul, ceil/conv3x3   the machine's ceilings in the same run.
--tbsn-fwd/--tbsn-train/--tbsn-mem SHAPE set the TBSN rows' shapes, --tbsn-width/--tbsn-blocks
a smaller TBSN (dim; blocks per level and refinement blocks) for smoke runs.
Each side runs in its own worker process with the same number of threads (XLA's default is
one per available core; torch.set_num_threads gets the same number), so neither thread pool
disturbs the other. Per row both sides compile and warm up, then repeats alternate AB, BA, ...
(interleaved, so a change of machine load hits both); the table shows medians and the
1-minute load average seen during the row. GFLOP/s use XLA's cost analysis of the JAX program
(the PyTorch program does the same arithmetic). Before timing, the PyTorch networks are
checked against the authors' reference outputs (bench/torch_parity.py).
--device cuda: JAX runs on its default device (the GPU), PyTorch on CUDA (synchronised after
each call); both with their default float32 conv precision (TF32 on Ampere and later); the
ceiling rows (CPU ones) are left out. --inner N times N calls per repeat (GPU steps take
milliseconds). Results: a table on stdout, JSON in bench/results/ (or --out), and with
--readme the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import multiprocessing as mp
import os
import re
import sys
import time
from pathlib import Path

import common
import numpy as np

common.on_path()
REPO, BENCH = common.REPO, common.BENCH
NAMES = ("bnn", "lan", "unet")
LR = 3e-4
# The targets: JAX/PyTorch time per row kind, and stage step / student step.
TARGETS = {"fwd": 0.7, "train/bnn": 0.7, "train/lan": 1.0, "train/unet": 1.0}
# N x (network input side). The train row at the published 4x128 (--tbsn-train 4x128) needs
# about 30 GB on CPU with both workers alive (bench/README.md, TBSN rows): 4x64 by default.
TBSN_SHAPES = {"fwd": "4x64", "train": "4x64", "mem": "1x256"}
MIB = 2**20
STAGE_VS_STUDENT = 1.3
STAGE_STUDENT = {"lan": "lan", "unet": "unet"}
MATMUL_N = 2048
CONV_CEIL = (1, 128, 96)  # N, H=W, C_in = C_out of the 3x3 conv ceiling


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    kind: str  # fwd | train | stage | mem | ceil
    net: str = ""
    shape: str = ""
    mode: str = ""
    width: int = 0  # BNN and U-Net width; 0: the paper's (48)
    dtype: str = "float32"  # JAX compute dtype; "bfloat16": PyTorch under autocast
    blocks: int = 0  # TBSN's blocks per level and refinement blocks; 0: the published 4

    @property
    def nhw(self) -> tuple[int, int]:
        """(N, H = W) from the shape "<N>x<size>"."""
        n, size = self.shape.split("x")
        return int(n), int(size)


def tbsn_size(width: int = 0, blocks: int = 0) -> dict:
    """TBSN's attributes (ours and TorchTBSN's alike): the published network (dim 48, 4 blocks
    per level, 4 refinement blocks), with dim = `width` and `blocks` blocks per level and
    refinement blocks where they are > 0."""
    size: dict = {"dim": width} if width else {}
    if blocks:
        size |= {"num_blocks": (blocks,) * 3, "num_refinement_blocks": blocks}
    return size


def network_kwargs(name: str, width: int = 0, dtype: str = "float32", blocks: int = 0) -> dict:
    """make_network's attributes: paper sizes, `width` for the BNN and U-Net when > 0 (the
    LAN keeps 64), TBSN's `tbsn_size(width, blocks)`, compute dtype `dtype` (float32: None,
    as `train.build_networks`)."""
    import jax.numpy as jnp

    if name == "tbsn":
        kwargs = tbsn_size(width, blocks)
    else:
        kwargs = {"width": width} if width and name != "lan" else {}
    if dtype != "float32":
        kwargs["dtype"] = jnp.dtype(dtype)
    return kwargs


def all_rows(
    shapes: list[str],
    tbsn_shapes: dict[str, str] = TBSN_SHAPES,
    tbsn_width: int = 0,
    tbsn_blocks: int = 0,
) -> list[Row]:
    """The rows in run order. shapes: "<N>x<size>" of the SASL rows; tbsn_shapes: {kind: shape}
    of the TBSN rows (kinds fwd, train, mem); tbsn_width, tbsn_blocks: `tbsn_size`."""
    rows = [Row("ceil/matmul", "ceil", "matmul"), Row("ceil/conv3x3", "ceil", "conv3x3")]
    for kind in ("fwd", "train"):
        for net in NAMES:
            rows += [Row(f"{kind}/{net}/{s}", kind, net, s) for s in shapes]
    for net in ("lan", "unet"):
        for mode in ("online", "precomputed"):
            rows += [Row(f"stage/{net}/{mode}/{s}", "stage", net, s, mode) for s in shapes]
    rows += [
        Row(f"{kind}/tbsn/{s}", kind, "tbsn", s, width=tbsn_width, blocks=tbsn_blocks)
        for kind, s in tbsn_shapes.items()
    ]
    # Ceilings again at the end: on a shared machine the load drifts during a run, and the
    # table uses the best of the two measurements.
    return rows + [
        Row("ceil/matmul/end", "ceil", "matmul"),
        Row("ceil/conv3x3/end", "ceil", "conv3x3"),
    ]


# ----------------------------------------------------------------------------------- JAX side


def _jax_inputs(n: int, size: int, channels: int = 3, seed: int = 0):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0, 255, (n, size, size, channels)).astype(np.float32))


def _jax_student_step(net, tx):
    """L1(net(x), y) + Adam, state donated: the shape of `train.make_train_step`."""
    import jax
    import jax.numpy as jnp
    import optax

    def step(state, x, y):
        def loss_fn(p):
            return jnp.mean(jnp.abs(net.apply({"params": p}, x) - y))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

    return jax.jit(step, donate_argnums=0)


def stage_problem(
    student: str, mode: str, batch_shape: tuple[int, ...], width: int = 0, dtype: str = "float32"
):
    """(networks, stage, teachers, batch): the student's stage step on random data.

    batch_shape: the batch's shape without channels, ending in (N, H, W): (N, H, W) for one
    step per call, (K, N, H, W) for K. Channels: 3, plus 3 per teacher output when mode is
    "precomputed" (then teachers is {}); online teachers get random initial parameters.
    Values uniform in [0, 255] (only the time is measured). width, dtype: `network_kwargs`.
    """
    import jax
    import jax.numpy as jnp

    from sassid_jax.methods.stages import make_stage
    from sassid_jax.nn import make_network

    stage = make_stage(student, (student,), (student,))
    networks = {name: make_network(name, **network_kwargs(name, width, dtype)) for name in NAMES}
    channels = 3 + 3 * len(stage.teachers) if mode == "precomputed" else 3
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.uniform(0, 255, (*batch_shape, channels)).astype(np.float32))
    blank = jax.ShapeDtypeStruct((1, *batch_shape[-2:], 3), jnp.float32)
    shapes = {t: jax.eval_shape(networks[t].init, jax.random.key(0), blank) for t in stage.teachers}
    teachers = (
        {}
        if mode == "precomputed"
        else {t: random_init(shapes[t], i + 1)["params"] for i, t in enumerate(stage.teachers)}
    )
    return networks, stage, teachers, batch


def tbsn_problem(row: Row):
    """(networks, stage, tx, batch) of configs/tbsn.py's stage with the row's TBSN size
    (`tbsn_size(row.width, row.blocks)`; the config's own is the parity fixture's).

    The row's shape N x s is what the network sees, the first PD-5 sub-image: the batch is
    (N, 5 s, 5 s, 3) crops, uniform in [0, 255]; tx the config's AdamW.
    """
    import ml_collections

    from sassid_jax.configs import tbsn as tbsn_config
    from sassid_jax.methods.tbsn import TRAIN_PD_FACTOR
    from sassid_jax.training import train_step

    n, size = row.nhw
    config = tbsn_config.get_config()
    size_attrs = tbsn_size(row.width, row.blocks)
    config.networks.bnn = ml_collections.ConfigDict({"arch": "tbsn", **size_attrs})
    networks = train_step.build_networks(config)
    (stage,) = train_step.build_stages(config)
    tx = train_step.make_optimizer(config, stage.name)
    return networks, stage, tx, _jax_inputs(n, TRAIN_PD_FACTOR * size)


def tbsn_adamw() -> dict:
    """torch.optim.AdamW's arguments from configs/tbsn.py: its stage's lr (that of its first
    step), betas, eps and weight decay."""
    from sassid_jax.configs import tbsn as tbsn_config

    c = tbsn_config.get_config()
    oc = c.optimizer
    return {
        "lr": c.stages[c.stage_order[0]].lr,
        "betas": (oc.b1, oc.b2),
        "eps": oc.eps,
        "weight_decay": oc.weight_decay,
    }


def random_init(shapes, seed: int = 0):
    """Arrays of `shapes` (a jax.eval_shape result of an init): under the top-level "params"
    key kernels (ndim >= 2) ~ N(0, 1 / fan_in) and biases 0; every other leaf (the step, Adam's
    count and moments) 0, as Adam's init. Only the time is measured, and nothing compiles here:
    an eager Flax init compiles each of its ops (88 for a U-Net, 0.3 s each on a loaded CPU)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        if getattr(path[0], "key", None) == "params" and len(shape.shape) >= 2:
            std = float(np.prod(shape.shape[:-1])) ** -0.5
            return jnp.asarray(rng.normal(0.0, std, shape.shape).astype(shape.dtype))
        return jnp.asarray(np.zeros(shape.shape, shape.dtype))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def build_jax(row: Row):
    """(run: () -> None that blocks, info dict with 'flops')."""
    import jax
    import jax.numpy as jnp
    import optax

    from sassid_jax.nn import make_network
    from sassid_jax.nn.layers import conv2d

    if row.kind == "ceil":
        if row.net == "matmul":
            rng = np.random.default_rng(0)
            a = jnp.asarray(rng.standard_normal((MATMUL_N, MATMUL_N), np.float32))
            b = jnp.asarray(rng.standard_normal((MATMUL_N, MATMUL_N), np.float32))
            fn, args = jax.jit(jnp.dot), (a, b)
        else:
            n, s, c = CONV_CEIL
            x = _jax_inputs(n, s, c)
            k = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, c, c), np.float32))
            fn, args = jax.jit(conv2d), (x, k)
        compiled = fn.lower(*args).compile()
        return (lambda: compiled(*args).block_until_ready()), _info(compiled)

    n, size = row.nhw
    net = make_network(row.net, **network_kwargs(row.net, row.width, row.dtype, row.blocks))
    x = _jax_inputs(n, size)
    if row.kind == "fwd":
        params = random_init(jax.eval_shape(net.init, jax.random.key(0), x[:1]))
        compiled = jax.jit(net.apply).lower(params, x).compile()
        info = _info(compiled, params["params"])
        return (lambda: compiled(params, x).block_until_ready()), info

    tx = optax.adam(LR)
    if row.kind == "train" and row.net in NAMES:
        params = random_init(jax.eval_shape(net.init, jax.random.key(0), x[:1]))["params"]
        y = x if row.net == "bnn" else _jax_inputs(n, size, seed=1)
        step = _jax_student_step(net, tx)
        box = {"state": {"params": params, "opt": tx.init(params)}}
        compiled = step.lower(box["state"], x, y).compile()

        def run_train():
            box["state"], loss = compiled(box["state"], x, y)
            loss.block_until_ready()

        return run_train, _info(compiled, params)

    # stage rows and TBSN's train row: the library's own step
    lowered, (state, *rest) = lowered_stage(row)
    compiled = lowered.compile()
    box = {"state": state}

    def run_stage():
        box["state"], metrics = compiled(box["state"], *rest)
        metrics["loss"].block_until_ready()

    return run_stage, _info(compiled, state["params"])


def lowered_stage(row: Row):
    """(lowered step, its arguments (state, teachers, batch, finite)): `train.make_train_step`
    of a stage row (`stage_problem`, Adam) or of TBSN's train or mem row (`tbsn_problem`);
    random parameters (`random_init`)."""
    import jax
    import jax.numpy as jnp
    import optax

    from sassid_jax.training import sharding, train_step

    n, size = row.nhw
    if row.net == "tbsn":
        networks, stage, tx, batch = tbsn_problem(row)
        teachers, mode = {}, "online"  # no teachers
    else:
        networks, stage, teachers, batch = stage_problem(
            row.net, row.mode, (n, size, size), row.width, row.dtype
        )
        tx, mode = optax.adam(LR), row.mode
    init = functools.partial(train_step.init_state, networks, stage, tx, crop=size)
    state = random_init(jax.eval_shape(init, jax.random.key(0)))
    step = train_step.make_train_step(networks, stage, tx, sharding.make_mesh(), mode)
    args = (state, teachers, batch, jnp.bool_(True))
    return step.lower(*args), args


def jax_memory(row: Row) -> dict:
    """The memory of a mem row's compiled step (compiled, not run): {"bytes": temp + argument +
    output, and each of "temp", "argument", "output", "alias" (bytes of outputs that reuse a
    donated argument's buffer, counted in both argument and output)}."""
    lowered, _ = lowered_stage(row)
    m = lowered.compile().memory_analysis()
    parts = {
        "temp": m.temp_size_in_bytes,
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "alias": m.alias_size_in_bytes,
    }
    return {"bytes": parts["temp"] + parts["argument"] + parts["output"], **parts}


def _info(compiled, params=None) -> dict:
    """{"flops": XLA's cost analysis of `compiled`, "parameters": the elements of `params`
    (0 without)}."""
    import jax

    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    return {"flops": float(cost.get("flops", 0.0)), "parameters": count}


# ------------------------------------------------------------------------------- PyTorch side


def _torch_inputs(n: int, size: int, seed: int = 0, device: str = "cpu"):
    import torch

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.uniform(0, 255, (n, 3, size, size)).astype(np.float32))
    return x.to(device)


def build_torch(row: Row, device: str = "cpu"):
    import torch
    import torch.nn.functional as F  # noqa: N812
    import torch_nets

    if row.kind == "ceil":
        g = torch.Generator().manual_seed(0)
        if row.net == "matmul":
            a = torch.randn(MATMUL_N, MATMUL_N, generator=g)
            b = torch.randn(MATMUL_N, MATMUL_N, generator=g)
            return (lambda: torch.mm(a, b)), {}
        n, s, c = CONV_CEIL
        x, k = torch.randn(n, c, s, s, generator=g), torch.randn(c, c, 3, 3, generator=g)
        return (lambda: F.conv2d(x, k, padding=1)), {}

    n, size = row.nhw
    torch.manual_seed(0)
    net = _torch_network(row, row.net, device)
    cast = _autocast(row, device)
    if row.net == "tbsn" and row.kind != "fwd":  # train and mem rows: configs/tbsn.py's step
        return _torch_tbsn_step(net, n, size, device, cast), {}
    x = _torch_inputs(n, size, device=device)
    if row.kind == "fwd":
        net.eval()

        def run_fwd():
            with torch.no_grad(), cast():
                net(x)

        return run_fwd, {}

    opt = torch.optim.Adam(net.parameters(), lr=LR)
    if row.kind == "train":
        y = x if row.net == "bnn" else _torch_inputs(n, size, seed=1, device=device)
        return (lambda: _torch_step(net, opt, lambda out: F.l1_loss(out, y), x, cast)), {}

    teacher_names = ("bnn",) if row.net == "lan" else ("bnn", "lan")
    teachers = {t: _torch_network(row, t, device).eval() for t in teacher_names}
    fixed = {
        t: _torch_inputs(n, size, seed=i + 1, device=device) for i, t in enumerate(teacher_names)
    }

    def run_stage():
        if row.mode == "online":
            with torch.no_grad(), cast():
                outs = {t: m(x) for t, m in teachers.items()}
        else:
            outs = fixed
        if row.net == "lan":
            loss_fn = lambda out: F.l1_loss(out, outs["bnn"])
        else:
            with torch.no_grad():
                alpha = torch_nets.flatness_alpha(outs["bnn"])
            loss_fn = lambda out: torch_nets.adaptive_loss(out, outs["bnn"], outs["lan"], alpha)
        _torch_step(net, opt, loss_fn, x, cast)

    return run_stage, {}


def _torch_tbsn_step(net, n: int, size: int, device: str, cast):
    """() -> None: one step of configs/tbsn.py's stage in PyTorch: (n, 3, 5 size, 5 size) NCHW
    crops, the network on their first PD-5 sub-image x[:, :, ::5, ::5], L1 to it,
    torch.optim.AdamW with the config's settings (`tbsn_adamw`)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from sassid_jax.methods.tbsn import TRAIN_PD_FACTOR

    f = TRAIN_PD_FACTOR
    crops = _torch_inputs(n, f * size, device=device)
    opt = torch.optim.AdamW(net.parameters(), **tbsn_adamw())

    def run_train():
        sub = crops[:, :, ::f, ::f]
        _torch_step(net, opt, lambda out: F.l1_loss(out, sub), sub, cast)

    return run_train


def _proc_status_bytes(field: str) -> int:
    """A "kB" field of /proc/self/status (VmRSS: the resident set now, VmHWM: its peak), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"/proc/self/status has no {field}")


def torch_memory(row: Row, device: str) -> dict:
    """The memory of one step of a mem row in this (fresh) process: {"bytes": the peak RSS
    from building the network to the end of one step minus the RSS before, "before": that
    RSS}. On CUDA: the growth of torch.cuda.max_memory_allocated instead. Linux: the peak
    (VmHWM) is reset to the current RSS first (/proc/self/clear_refs), so the imports' own
    transient peak is not counted against the step."""
    import torch

    import sassid_jax.configs.tbsn  # noqa: F401  (imported before the first reading)

    if device != "cpu":
        before = torch.cuda.max_memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_bytes("VmRSS")
    run, _ = build_torch(row, device)
    _synchronised(run, device)()
    after = torch.cuda.max_memory_allocated() if device != "cpu" else _proc_status_bytes("VmHWM")
    return {"bytes": after - before, "before": before}


def _torch_network(row: Row, name: str, device: str):
    import torch_nets

    if name == "tbsn":
        return torch_nets.TorchTBSN(**tbsn_size(row.width, row.blocks)).to(device)
    width = {"width": row.width} if row.width and name != "lan" else {}
    return torch_nets.NETWORKS[name](**width).to(device)


def _autocast(row: Row, device: str):
    """() -> context: torch.autocast to bfloat16 for a bfloat16 row, else a no-op."""
    import torch

    on = row.dtype == "bfloat16"
    return lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=on)


def _torch_step(net, opt, loss_fn, x, cast) -> None:
    opt.zero_grad(set_to_none=True)
    with cast():  # forward and loss in the autocast dtype; backward outside, as torch advises
        loss = loss_fn(net(x))
    loss.backward()
    opt.step()


# ------------------------------------------------------------------------------------ workers


def _synchronised(run, device: str):
    """run, followed by a wait for the CUDA queue when device is a GPU (JAX's runs block)."""
    if device == "cpu":
        return run
    import torch

    def run_sync():
        run()
        torch.cuda.synchronize()

    return run_sync


def _worker(
    conn, backend: str, threads: int, device: str = "cpu", inner: int = 1, check: bool = True
) -> None:
    """Serve ('setup', row) / ('run',) / ('memory', row) / ('drop',) / ('stop',) for one backend.

    A 'run' times `inner` consecutive calls; 'memory' answers `jax_memory` or `torch_memory`.
    device matters to PyTorch only: JAX runs on its default device. check: PyTorch checks its
    networks against the parity data first."""
    common.on_path()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        import torch_parity

        conn.send(
            {
                # {} where the parity data is absent (a bare accelerator machine)
                "parity": torch_parity.check_all(torch_parity.DEFAULT_DATA) if check else {},
                "version": torch.__version__,
                "threads": torch.get_num_threads(),
                "devices": device if device == "cpu" else torch.cuda.get_device_name(),
            }
        )

        def build(row):
            run, info = build_torch(row, device)
            return _synchronised(run, device), info

        memory = functools.partial(torch_memory, device=device)
    else:
        import jax

        conn.send(
            {
                "version": jax.__version__,
                "devices": str(jax.devices()),
                "device_count": jax.device_count(),
                "platform": jax.default_backend(),
            }
        )
        build, memory = build_jax, jax_memory
    run = None
    while True:
        msg = conn.recv()
        if msg[0] == "setup":
            run = None
            gc.collect()
            t = time.perf_counter()
            run, info = build(msg[1])
            run()  # warm-up (first call after compilation)
            info["setup_s"] = time.perf_counter() - t
            conn.send(info)
        elif msg[0] == "run":
            t = time.perf_counter()
            for _ in range(inner):
                run()
            conn.send((time.perf_counter() - t) / inner)
        elif msg[0] == "memory":
            conn.send(memory(msg[1]))
        elif msg[0] == "drop":
            run = None
            gc.collect()
            conn.send(None)
        else:
            conn.send(None)
            return


class Worker:
    def __init__(
        self, backend: str, threads: int, device: str = "cpu", inner: int = 1, check: bool = True
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker, args=(child, backend, threads, device, inner, check), daemon=True
        )
        self.backend = backend
        self.proc.start()
        self.hello = self._receive()

    def _receive(self):
        """The worker's answer; exits with a message if the worker died (no endless wait)."""
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                sys.exit(
                    f"speed.py: the {self.backend} worker died (exit code "
                    f"{self.proc.exitcode}); its traceback is printed above"
                )
        return self.conn.recv()

    def ask(self, *msg):
        self.conn.send(msg)
        return self._receive()

    def close(self) -> None:
        self.ask("stop")
        self.proc.join(30)


# ------------------------------------------------------------------------------------- driver


def _row_fields(row: Row) -> dict:
    """What a result record says of its row: name, kind, net, shape, mode."""
    return {"row": row.name, "kind": row.kind, "net": row.net, "shape": row.shape, "mode": row.mode}


def measure_row(row: Row, jx: Worker, pt: Worker, lo: int, hi: int, budget: float) -> dict:
    sides = {"jax": jx, "torch": pt}
    info = {k: w.ask("setup", row) for k, w in sides.items()}
    times, loads = common.interleaved(
        {k: (lambda w=w: w.ask("run")) for k, w in sides.items()}, lo, hi, budget
    )
    for w in sides.values():
        w.ask("drop")
    med = common.medians(times)
    flops = info["jax"].get("flops", 0.0)
    if row.kind == "ceil":
        flops = _ceiling_flops(row.net)
    return {
        **_row_fields(row),
        "jax_s": med["jax"],
        "torch_s": med["torch"],
        "ratio": med["jax"] / med["torch"],
        "times": times,
        "loadavg": loads,
        "flops": flops,
        "jax_gflops": flops / med["jax"] / 1e9,
        "torch_gflops": flops / med["torch"] / 1e9,
        "setup_s": {k: v["setup_s"] for k, v in info.items()},
        "parameters": info["jax"].get("parameters", 0),
    }


def measure_memory(row: Row, jx: Worker, threads: int, device: str = "cpu") -> dict:
    """A mem row: `jax_memory` in the JAX worker, `torch_memory` in a fresh PyTorch worker
    (same threads, no parity check: nothing but its imports before the step)."""
    loads = [os.getloadavg()]
    jax_mem = jx.ask("memory", row)
    fresh = Worker("torch", threads, device, check=False)
    try:
        torch_mem = fresh.ask("memory", row)
    finally:
        fresh.close()
    loads.append(os.getloadavg())
    return {
        **_row_fields(row),
        "jax_bytes": jax_mem["bytes"],
        "torch_bytes": torch_mem["bytes"],
        "ratio": jax_mem["bytes"] / torch_mem["bytes"],
        "jax_memory": jax_mem,
        "torch_memory": torch_mem,
        "loadavg": loads,
    }


def _ceiling_flops(which: str) -> float:
    if which == "matmul":
        return 2.0 * MATMUL_N**3
    n, s, c = CONV_CEIL
    return 2.0 * n * s * s * 9 * c * c


def target_of(r: dict) -> float | None:
    if r["kind"] == "fwd":
        return TARGETS["fwd"] if r["net"] in NAMES else None  # none set for TBSN
    return TARGETS.get(f"{r['kind']}/{r['net']}")


def add_stage_ratios(results: list[dict]) -> None:
    by_name = {r["row"]: r for r in results}
    for r in results:
        if r["kind"] == "stage":
            student = by_name.get(f"train/{STAGE_STUDENT[r['net']]}/{r['shape']}")
            if student:
                r["jax_vs_student"] = r["jax_s"] / student["jax_s"]
                r["torch_vs_student"] = r["torch_s"] / student["torch_s"]


def format_memory(results: list[dict], device: str = "cpu") -> str:
    """The mem rows' table and what each side measures; "" when there are none."""
    mem = [r for r in results if r["kind"] == "mem"]
    if not mem:
        return ""
    header = ("row", "JAX MiB", "PyTorch MiB", "JAX/PyTorch", "JAX temp / argument / output MiB")
    lines = [
        (
            r["row"],
            f"{r['jax_bytes'] / MIB:.0f}",
            f"{r['torch_bytes'] / MIB:.0f}",
            f"{r['ratio']:.2f}",
            " / ".join(f"{r['jax_memory'][k] / MIB:.0f}" for k in ("temp", "argument", "output")),
        )
        for r in mem
    ]
    torch_side = (
        "the peak RSS of a fresh worker process over one step minus its RSS before (network, "
        "AdamW state, batch, activations and allocator slack)"
        if device == "cpu"
        else "the growth of torch.cuda.max_memory_allocated over one step in a fresh process"
    )
    return (
        "\nMemory of one train step (not timed). JAX: the compiled step's memory_analysis(), "
        "temp + argument + output bytes (nothing runs; the donated state counts in both "
        f"argument and output). PyTorch: {torch_side}.\n\n"
        + common.markdown_table(header, lines)
        + "\n"
    )


def format_table(results: list[dict], meta: dict) -> str:
    mem_table = format_memory(results, meta.get("device", "cpu"))
    results = [r for r in results if r["kind"] != "mem"]
    best_jax = max((r["jax_gflops"] for r in results if r["kind"] == "ceil"), default=0.0)
    header = (
        "row", "JAX ms", "PyTorch ms", "JAX/PyTorch", "target", "met",
        "stage/student JAX (PyTorch)", "JAX GFLOP/s", "PyTorch GFLOP/s",
        "JAX % of best ceiling", "load 1-min",
    )  # fmt: skip
    lines = []
    for r in results:
        t = target_of(r)
        met = "" if t is None else ("yes" if r["ratio"] <= t else "**no**")
        vs = ""
        if "jax_vs_student" in r:
            ok = "yes" if r["jax_vs_student"] <= STAGE_VS_STUDENT else "**no**"
            vs = f"{r['jax_vs_student']:.2f} ({r['torch_vs_student']:.2f}) <= 1.3: {ok}"
        loads = [a[0] for a in r["loadavg"]]
        pct = 100 * r["jax_gflops"] / best_jax if best_jax else 0.0
        lines.append(
            (
                r["row"],
                f"{1e3 * r['jax_s']:.0f}",
                f"{1e3 * r['torch_s']:.0f}",
                f"{r['ratio']:.2f}",
                "" if t is None else f"<= {t}",
                met,
                vs,
                f"{r['jax_gflops']:.0f}",
                f"{r['torch_gflops']:.0f}",
                f"{pct:.0f}",
                f"{min(loads):.1f}-{max(loads):.1f}",
            )
        )
    m = meta["machine"]
    # The bench's own threads account for a load of about `threads`; more means other work.
    state = common.load_state(meta["load_max"], meta["threads"])
    head = (
        f"Run {meta['started']} ({meta['mode']} mode, {meta['wall_s'] / 60:.1f} min): "
        f"{m['cpu']}, {m['affinity']} cores available (AVX-512: {m['avx512']}), "
        f"{meta['threads']} threads on both sides; jax {meta['jax']}, torch {meta['torch']}; "
        f"XLA_FLAGS={m['xla_flags'] or '(none)'}. Medians of {meta['repeats']} interleaved "
        f"repeats per row. 1-minute load average during the runs: "
        f"{meta['load_min']:.1f}-{meta['load_max']:.1f} "
        f"({state})."
    )
    if meta.get("device", "cpu") != "cpu":
        head += (
            f" Accelerator: JAX on {meta['jax_devices']}, PyTorch on "
            f"{meta['torch_devices']}; {meta['inner']} calls per timed repeat."
        )
    if "tbsn" in meta:
        count = max((r.get("parameters", 0) for r in results if r["net"] == "tbsn"), default=0)
        head += (
            f" TBSN rows: dim {meta['tbsn']['dim']}, blocks per level and refinement blocks "
            f"{meta['tbsn']['blocks']} ({count:,} parameters)."
        )
    return head + "\n\n" + common.markdown_table(header, lines) + "\n" + mem_table


def update_readme(table: str) -> None:
    path = BENCH / "README.md"
    start, end = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
    text = path.read_text() if path.exists() else f"{start}\n{end}\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    common.write_text(path, pattern.sub(lambda _: f"{start}\n{table}{end}", text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1-2 repeats per row and a shorter per-row budget (a few minutes)",
    )
    ap.add_argument("--rows", default="", help="regex: keep only matching row names")
    ap.add_argument("--shapes", default="1x256,8x128")
    for kind, what in (
        ("fwd", "the TBSN forward row"),
        ("train", "the TBSN train row (the PD-5 sub-image; crops 5x the side)"),
        ("mem", "the TBSN memory row (as --tbsn-train)"),
    ):
        ap.add_argument(
            f"--tbsn-{kind}", default=TBSN_SHAPES[kind], metavar="SHAPE", help=f"NxSIZE of {what}"
        )
    ap.add_argument("--tbsn-width", type=int, default=0, help="TBSN's dim (0: the published 48)")
    ap.add_argument(
        "--tbsn-blocks",
        type=int,
        default=0,
        help="TBSN's blocks per level and refinement blocks (0: the published 4)",
    )
    ap.add_argument("--min-repeats", type=int, default=None)
    ap.add_argument("--max-repeats", type=int, default=None)
    ap.add_argument(
        "--row-budget",
        type=float,
        default=None,
        help="seconds of timed runs per row (repeats shrink to fit, not below min)",
    )
    ap.add_argument("--threads", type=int, default=common.available_cores())
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: PyTorch on the GPU (JAX uses its default device)",
    )
    ap.add_argument("--inner", type=int, default=1, help="calls timed together per repeat")
    ap.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="print (and with --readme write) the table of a saved run; no timing",
    )
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        table = format_table(saved["rows"], saved["meta"])
        print(table)
        if args.readme:
            update_readme(table)
        return
    lo = args.min_repeats or (1 if args.quick else 3)
    hi = args.max_repeats or (2 if args.quick else 7)
    budget = args.row_budget or (8.0 if args.quick else 30.0)
    tbsn_shapes = {"fwd": args.tbsn_fwd, "train": args.tbsn_train, "mem": args.tbsn_mem}
    every = all_rows(args.shapes.split(","), tbsn_shapes, args.tbsn_width, args.tbsn_blocks)
    rows = [r for r in every if re.search(args.rows, r.name)]
    if args.device != "cpu" and any(r.kind == "ceil" for r in rows):
        rows = [r for r in rows if r.kind != "ceil"]
        print("--device cuda: the ceiling rows measure the CPU; left out", flush=True)

    t0, started = time.perf_counter(), common.timestamp()
    pt = Worker("torch", args.threads, args.device, args.inner)
    bad = {k: v for k, v in pt.hello["parity"].items() if v > 1}
    if bad:
        sys.exit(f"PyTorch networks disagree with the reference outputs: {bad}")
    print(
        "PyTorch networks match the authors' reference outputs "
        f"(worst max|diff|/tolerance {max(pt.hello['parity'].values(), default=0.0):.3f})"
        if pt.hello["parity"]
        else "no parity data: the PyTorch networks were not checked",
        flush=True,
    )
    jx = Worker("jax", args.threads, args.device, args.inner)
    results = []
    for row in rows:
        if row.kind == "mem":
            r = measure_memory(row, jx, args.threads, args.device)
            results.append(r)
            print(
                f"{r['row']:32s} jax {r['jax_bytes'] / MIB:9.0f} MiB torch "
                f"{r['torch_bytes'] / MIB:9.0f} MiB  ratio {r['ratio']:.2f}",
                flush=True,
            )
            continue
        r = measure_row(row, jx, pt, lo, hi, budget)
        results.append(r)
        print(
            f"{r['row']:32s} jax {1e3 * r['jax_s']:9.1f} ms  torch {1e3 * r['torch_s']:9.1f} ms"
            f"  ratio {r['ratio']:.2f}  jax {r['jax_gflops']:.0f} GFLOP/s  "
            f"load {r['loadavg'][-1][0]:.1f}  (n={len(r['times']['jax'])})",
            flush=True,
        )
    jx.close()
    pt.close()
    add_stage_ratios(results)
    loads = [a[0] for r in results for a in r["loadavg"]]
    meta = {
        "started": started,
        "mode": "quick" if args.quick else "default",
        "wall_s": time.perf_counter() - t0,
        "machine": common.machine_info(args.threads),
        "threads": args.threads,
        "jax": jx.hello["version"],
        "torch": pt.hello["version"],
        "repeats": f"{lo}-{hi}",
        "load_min": min(loads),
        "load_max": max(loads),
        "parity": pt.hello["parity"],
        "command": " ".join(sys.argv),
        "device": args.device,
        "inner": args.inner,
        "jax_devices": jx.hello["devices"],
        "torch_devices": pt.hello["devices"],
    }
    if any(r.net == "tbsn" for r in rows):
        meta["tbsn"] = {"dim": args.tbsn_width or 48, "blocks": args.tbsn_blocks or 4}
    table = format_table(results, meta)
    print("\n" + table)
    out = common.write_record(
        args.out or common.record_path("speed", started), {"meta": meta, "rows": results}
    )
    print(f"wrote {out}")
    if args.readme:
        update_readme(table)
        print("updated bench/README.md")


if __name__ == "__main__":
    main()
