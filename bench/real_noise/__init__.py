"""Real-noise quality: SASL trained self-supervised on real SIDD noise, against baselines.

  python -m bench.real_noise --config=configs/real_noise/sidd_short.py \
      --config.out=scratch/quality_real/short
  python -m bench.real_noise --config=configs/real_noise/sidd_full.py \
      --config.out=scratch/quality_real/full
  python -m bench.real_noise --config=configs/real_noise/dnd.py \
      --config.from_run=scratch/quality_real/full --config.out=scratch/quality_real/dnd

A protocol is a config in configs/real_noise/ (one per protocol); any field is overridden
with --config.<field>=<value> (e.g. --config.methods=sasl,sasl_b5
--config.run.stages.bnn.steps=2000). Run from the repository root.

The SIDD protocols (`sidd.py`) train, through the library's
`sassid_jax.train.train_and_evaluate`, with the protocol's `run` config
(`dataset.name='image_folder'`):
- SASL: BNN (b = 9) -> LAN -> U-Net, the three stages;
- the blind-spot baseline `bsn`: the same recipe with BNN blind size 1;
- only when listed in `methods`, `sasl_b5`: SASL with blind size 5, which hides the lags
  <= 2 that carry SIDD's noise correlation (b = 9 hides lags <= 4), an experiment;
on real noisy images only (no clean image is ever read for training), and score every
network against the ground truth of the SIDD pair (PSNR/SSIM by the published protocol,
`sassid_jax.evaluation.metrics`). BNN-alone and LAN-alone rows are stages 1 and 2 of the SASL run.
Stage-1 networks are scored on isolated `run.eval.bnn_block` blocks (the crop size they are
trained on and used at as teachers) and on the whole 256x256 block. Also scored: BM3D (PyPI
`bm3d`, sigma estimated by scikit-image's `estimate_sigma`, and 1.5x that sigma) and the
noisy input.

The DND protocol (`dnd.py`) reuses the networks of a SIDD run (no training) on the 34 DND
crops (no ground truth) and reports the residual standard deviation in flat regions (flat =
the SASL BNN output's flatness map alpha < 0.5) before and after denoising, and saves panels.

Outputs (in `out`): results.json (table, per-stage seconds and steps/s, exact configs),
table.txt, panel_sidd.png and panel_sidd_2.png (the same crop of every method),
runs/<method>_seed<k>/ (the library's workdirs; timing.json keeps the stage times of the
call that trained each stage), data/ (the symlink folders the run config points at).
Re-running the same command evaluates finished runs again without retraining them.
"""
