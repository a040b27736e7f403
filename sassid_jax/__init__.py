"""sassid_jax: self-supervised real-world image denoising in JAX/Flax (SASL, CVPR 2023).

- `train`: `train_and_evaluate(config, workdir)`, the training run; read it first.
- `cli`: the command line (`sassid`, `python launch.py`): flags, modes, exit codes.
- `configuration`: config checks before any work, and what a resumed run may change.
- `configs`: the config files (the repository's configs/ folder), e.g. `configs.default`.
- `errors`: `UserInputError`, the base of every error a user can cause.
- `logs`: log set-up of command-line runs (library chatter filtered).
- `nn`: the networks, one module per architecture.
- `methods`: what each training stage learns from, one module per method.
- `noise`: camera noise: the simulator, statistics from noisy photos, its mean bias.
- `data`: datasets (TFDS builders), their registry and the training pipelines.
- `training`: the parts of the stage loop: step, run context, resume, selection, sharding.
- `evaluation`: the published protocol's scores, the final report, panels.
- `inference`: denoising images of any size, colour anchor, quality estimate, safeguard.
- `io`: photos, checkpoints and run folders, `.pth` and `.mat` files, paths.
- `modes`: the commands behind `--mode` (eval, submit, denoise, analyze, prepare).

The names below are the Python API; each loads its module on first use, so `import
sassid_jax` stays light (no TensorFlow until a dataset is read)::

    module, params = sassid_jax.load_network("runs/default")          # or an authors' .pth
    clean = sassid_jax.denoise_image(module, params, noisy_uint8_hwc)  # (H, W, 3) float32
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "BNN": "sassid_jax.nn",
    "LAN": "sassid_jax.nn",
    "UNet": "sassid_jax.nn",
    "make_network": "sassid_jax.nn",
    "load_torch_params": "sassid_jax.io.torch_params",
    "load_network": "sassid_jax.io.checkpoints",
    "read_photo": "sassid_jax.io.photos",
    "write_photo": "sassid_jax.io.photos",
    "train_and_evaluate": "sassid_jax.train",
    "denoise_image": "sassid_jax.inference.predict",
    "analyze_noise": "sassid_jax.noise.analysis",
    "simulate_camera_noise": "sassid_jax.noise.simulator",
    "psnr": "sassid_jax.evaluation.metrics",
    "ssim": "sassid_jax.evaluation.metrics",
    "UserInputError": "sassid_jax.errors",
}
_SUBPACKAGES = (
    "nn",
    "methods",
    "noise",
    "data",
    "training",
    "evaluation",
    "inference",
    "io",
    "modes",
)

__all__ = sorted([*_PUBLIC, *_SUBPACKAGES])


def __getattr__(name: str) -> Any:
    """The public names and subpackages, imported on first access (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"sassid_jax.{name}")
    raise AttributeError(f"module 'sassid_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
