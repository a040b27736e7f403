"""The main job: SASL's three stages on the embedded default data, minutes on a 2-core CPU.

  python launch.py --config configs/default.py --workdir runs/default

Expected (README, measured 2026-12-03 on this project's 2-core CPU, 7 min 50 s): held-out U-Net
24.00 dB / SSIM 0.5280 from a noisy 17.23 dB (BNN 22.02, LAN 23.83), estimated gain +5.54 dB.
Against the paper's recipe (configs/sasl_paper.py), for a short CPU run: width 32 (paper 48),
64x64 crops and batch 4 (256x256, 8), 400/150/400 steps at Adam 1e-3 (400k each at 3e-4; a GPU
sweep found the BNN gains most from extra steps and the LAN converges in ~150; the BNN's
held-out loss falls only 0.4% from step 400 to 600, bench/OWN_PHOTOS.md), and `normalize=True`
(inputs scaled to [-0.5, 0.5] inside the networks: raw [0, 255] inputs converge slowly in short
runs). Model selection, the colour anchor and the safeguard are on (docs/self_tuning.md);
losses, alpha thresholds, blind sizes and evaluation are the paper's.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "sasl_embedded"  # see sassid_jax/data/sources.py for the known names
    c.dataset.data_dir = ""  # TFDS data_dir; "" = TFDS default (~/tensorflow_datasets)
    c.dataset.manual_dir = ""  # SIDD / DND builders: the folder of downloaded files
    c.dataset.eval_name = ""  # dataset to evaluate on; "" = dataset.name
    c.dataset.tile = 512  # sidd_medium_srgb: stored tile side and stride (crops <= tile - stride)
    c.dataset.tile_stride = 256
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.max_pixels = 0  # photo folders: largest width x height read; 0 = Pillow's guard
    c.dataset.noisy_dir = ""  # image_folder only: folder of noisy photos
    c.dataset.clean_dir = ""  # image_folder only: optional clean references (same names)
    c.dataset.eval_noisy_dir = ""  # image_folder only: other photos to evaluate on ("" = same)
    c.dataset.eval_clean_dir = ""  # image_folder only: their clean references
    # Multi-process runs: seconds the other processes wait for process 0 to prepare the data.
    c.dataset.prepare_timeout = 3600.0

    c.crop_size = 64
    c.batch_size = 4  # global batch (all devices and processes)
    c.compute_dtype = "float32"  # or "bfloat16" (parameters, optimizer state, losses stay f32)

    c.networks = ml_collections.ConfigDict()
    # Each role's architecture (`arch`, a key of sassid_jax.nn.ARCHITECTURES) and its attributes.
    c.networks.bnn = ml_collections.ConfigDict(
        {"arch": "bnn", "blind_size": 9, "width": 32, "normalize": True}
    )
    c.networks.lan = ml_collections.ConfigDict(
        {"arch": "lan", "blind_size": 3, "width": 64, "num_blocks": 6, "normalize": True}
    )
    c.networks.unet = ml_collections.ConfigDict({"arch": "unet", "width": 32, "normalize": True})

    # Trained weights per network (a run folder, a checkpoint in one, or an authors' .pth;
    # local or gs://); "" = none. A network no stage trains is then a frozen teacher (so
    # stage_order=("unet",) with bnn and lan given trains only the U-Net); one a stage trains
    # starts there from these weights. See sassid_jax/training/pretrained.py.
    c.pretrained = ml_collections.ConfigDict({"bnn": "", "lan": "", "unet": ""})

    c.alpha = ml_collections.ConfigDict({"lower": 1.0, "upper": 5.0})
    c.optimizer = ml_collections.ConfigDict({"b1": 0.9, "b2": 0.999, "eps": 1e-8})

    c.stage_order = ("bnn", "lan", "unet")
    c.stages = ml_collections.ConfigDict()
    c.stages.bnn = ml_collections.ConfigDict(
        {"learners": ("bnn",), "losses": ("bnn",), "steps": 400, "lr": 1e-3}
    )
    c.stages.lan = ml_collections.ConfigDict(
        {"learners": ("lan",), "losses": ("lan",), "steps": 150, "lr": 1e-3}
    )
    c.stages.unet = ml_collections.ConfigDict(
        {"learners": ("unet",), "losses": ("unet",), "steps": 400, "lr": 1e-3}
    )

    c.train = ml_collections.ConfigDict()
    c.train.log_every = 25
    c.train.eval_every = 0  # 0: evaluate at the end of each stage only
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 2
    # Frozen teachers of stages 2 and 3: "online" runs them on every batch (the paper's
    # form); "precomputed" runs them once per training image (sassid_jax/training/teacher_cache.py).
    c.train.teachers = "online"
    # Train steps per jitted call (K batches stacked, K steps unrolled in one program). Same
    # arithmetic; on CPU one call allocates XLA's temporaries once instead of K times
    # (bench/NOTES.md, section 7e). log/checkpoint/eval intervals must be multiples of it.
    c.train.steps_per_call = 1
    # TensorBoard event files in workdir/tensorboard (process 0); False: none, the log only.
    c.train.tensorboard = True

    # Model selection without ground truth (training/selection.py): the bottom band of each
    # training photo (fraction of its rows, >= crop_size) is held out; every `every` steps
    # the stage's own loss on up to max_crops crops of it picks the best step, and the stage
    # stops once it has not fallen by more than min_delta (relative) for `patience`
    # evaluations (0: never). The final checkpoint holds the best parameters.
    c.selection = ml_collections.ConfigDict(
        {
            "enabled": True,
            "fraction": 0.1,
            "max_crops": 12,
            "every": 50,
            "patience": 4,
            "min_delta": 0.002,
        }
    )

    c.eval = ml_collections.ConfigDict()
    c.eval.max_images = 0  # 0: the whole eval split
    c.eval.save_panels = True
    # The BNN is evaluated (table, panels, alpha map) on isolated blocks of this size, the
    # size it is trained on and used at as a teacher; 0 = whole images. It follows crop_size
    # (also --config.crop_size=...) until set itself: a derived reference (.identity()), so
    # that setting eval.bnn_block replaces the link instead of writing through to crop_size.
    c.eval.bnn_block = c.get_ref("crop_size").identity()
    # --mode eval / submit: which network of --checkpoint, the x8 self-ensemble, batch size.
    c.eval.network = "unet"
    c.eval.ensemble = False
    c.eval.batch = 8

    # The test-time procedure (evaluation, eval/submit/denoise; sassid_jax/inference/procedure.py):
    # blind_size: the blind size every BNN runs at (-1: its own, as trained; AT-BSN: 3);
    # pd_factor, r3_repeats, r3_prob: pixel-shuffle downsampling of the test-time network's
    # input (1: none; AP-BSN: 2) and random-replacing refinement after it (0 passes: none;
    # AP-BSN: 8 at p = 0.16). These values leave SASL's networks as they are.
    c.inference = ml_collections.ConfigDict(
        {"blind_size": -1, "pd_factor": 1, "r3_repeats": 0, "r3_prob": 0.16}
    )

    # Applied to every output (evaluation, eval/submit/denoise modes), not to training.
    # colour_sigma: the output keeps the noisy input's local mean colour, blurred with a
    # Gaussian of this std in pixels (inference/colour_anchor.py: removes the colour shift
    # the LAN and U-Net learn), less the mean bias that clipping and the sRGB gamma give the
    # noise there (sassid_jax/noise/bias.py); 0 = off (the paper's raw network output).
    # safeguard: "blend" estimates each output's PSNR from its noisy photo alone and blends
    # the output with the input where it is estimated no better (sassid_jax/inference/safeguard.py);
    # "off" hands back the network's output as it is.
    c.postprocess = ml_collections.ConfigDict({"colour_sigma": 8.0, "safeguard": "blend"})
    return c
