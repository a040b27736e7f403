"""sassid_jax: self-supervised real-world image denoising in JAX/Flax (SASL, CVPR 2023).

- `train`: `train_and_evaluate(config, workdir)`, the training run; read it first.
- `cli`: the command line (`sassid`, `python launch.py`): flags, modes, exit codes.
- `configuration`: config checks before any work, and what a resumed run may change.
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
"""

__version__ = "0.1.0"
