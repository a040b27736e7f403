"""Check bench/torch_nets.py against the authors' reference outputs (../shared/data/parity).

  python bench/torch_parity.py [--data ../shared/data]

Loads the parity checkpoints into the PyTorch networks of the benchmark and compares their
outputs, sigma, alpha and the stage-3 loss with `reference_outputs.npz`, at the tolerances of
the data README (networks: max|diff| <= 1e-5 x max|ref|); where the peer fixtures are there,
also TorchTBSN (the small TBSN saved by the authors' code, loaded strictly) on the whole-network
input of `parity/peers/tbsn_reference.npz`. Exits 1 on a mismatch. The speed benchmark
(bench/speed.py) runs the same check (`check_all`) before timing anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch_nets  # noqa: E402

common.on_path()
from sassid_jax.methods.tbsn import SMALL_SIZE  # noqa: E402  (the fixture's TBSN)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINTS = {
    "bnn": ("parity/bnn_b9_c48_seed0.pth", "bnn_out_nchw"),
    "unet": ("parity/unet_c48_seed0.pth", "unet_out_nchw"),
    "lan": ("weights/official_LAN.pth", "lan_out_nchw"),
}
TBSN_FIXTURE = "parity/peers/tbsn_small_seed3.pth"
TBSN_REFERENCE = "parity/peers/tbsn_reference.npz"
TOLERANCE = 1e-5  # x max|reference|


def load_network(name: str, data: Path) -> torch.nn.Module:
    """A torch_nets network (paper sizes) with the parity checkpoint's weights, eval mode."""
    net = torch_nets.NETWORKS[name]()
    state = torch.load(data / CHECKPOINTS[name][0], map_location="cpu")
    net.load_state_dict(state)
    return net.eval()


def check(data: Path) -> dict[str, float]:
    """{quantity: max|diff| / tolerance}; every value must be <= 1."""
    with np.load(data / "parity" / "reference_outputs.npz") as f:
        ref = {k: torch.from_numpy(np.asarray(v)) for k, v in f.items()}
    x = ref["input_nchw"]
    ratios, outs = {}, {}
    with torch.no_grad():
        for name, (_, key) in CHECKPOINTS.items():
            outs[name] = load_network(name, data)(x)
            diff = (outs[name] - ref[key]).abs().max().item()
            ratios[name] = diff / (1e-5 * ref[key].abs().max().item())
        sigma = torch_nets.local_std(ref["bnn_out_nchw"])
        diff = (sigma - ref["sigma_nchw"]).abs().max().item()
        ratios["sigma"] = diff / (1e-6 * ref["sigma_nchw"].abs().max().item())
        for source, key in (
            ("bnn_out_nchw", "alpha_nchw"),
            ("gt_nchw", "alpha_of_gt_nchw"),
            ("lan_out_nchw", "alpha_of_lan_out_nchw"),
        ):
            alpha = torch_nets.flatness_alpha(ref[source])
            ratios[f"alpha({source})"] = (alpha - ref[key]).abs().max().item() / 1e-5
        loss = torch_nets.adaptive_loss(
            ref["unet_out_nchw"],
            ref["bnn_out_nchw"],
            ref["lan_out_nchw"],
            torch_nets.flatness_alpha(ref["bnn_out_nchw"]),
        )
        expected = ref["loss_stage3"].item()
        ratios["loss_stage3"] = abs(loss.item() - expected) / (1e-5 * abs(expected))
    return ratios


def load_tbsn(data: Path) -> torch.nn.Module:
    """TorchTBSN of the fixture's size with its weights (strict: the frozen masks included),
    eval mode."""
    net = torch_nets.TorchTBSN(**SMALL_SIZE)
    net.load_state_dict(torch.load(data / TBSN_FIXTURE, map_location="cpu"), strict=True)
    return net.eval()


def tbsn_max_diff(data: Path) -> tuple[float, float]:
    """(max|diff|, tolerance 1e-5 x max|ref|) of TorchTBSN on the fixture's (1, 3, 64, 64)
    NCHW input `x64` against the authors' output `tbsn_x64`."""
    with np.load(data / TBSN_REFERENCE) as f:
        x, ref = torch.from_numpy(f["x64"]), torch.from_numpy(f["tbsn_x64"])
    with torch.no_grad():
        out = load_tbsn(data)(x)
    return (out - ref).abs().max().item(), TOLERANCE * ref.abs().max().item()


def check_tbsn(data: Path) -> dict[str, float]:
    """{"tbsn": max|diff| / tolerance} of `tbsn_max_diff`; must be <= 1."""
    diff, tol = tbsn_max_diff(data)
    return {"tbsn": diff / tol}


def check_all(data: Path) -> dict[str, float]:
    """`check` where data/parity is there, and `check_tbsn` where the TBSN fixture is; {} when
    neither is (a bare accelerator machine)."""
    ratios = check(data) if (data / "parity" / "reference_outputs.npz").is_file() else {}
    if (data / TBSN_FIXTURE).is_file() and (data / TBSN_REFERENCE).is_file():
        ratios |= check_tbsn(data)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    ratios = check_all(args.data)
    if not ratios:
        sys.exit(f"no parity data under {args.data}")
    for k, r in ratios.items():
        print(f"{k:28s} max|diff| / tolerance = {r:.3f}  {'ok' if r <= 1 else 'FAIL'}")
    sys.exit(0 if all(r <= 1 for r in ratios.values()) else 1)


if __name__ == "__main__":
    main()
