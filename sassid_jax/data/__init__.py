"""Datasets: TFDS builders, the registry of dataset names, and the training pipelines.

- `sources`: the dataset names a config may use, name -> `Source`.
- `embedded`: `sasl_embedded`: scikit-image photos with simulated camera noise (no download).
- `folder`: `noisy_image_folder`: your own noisy photos (and optional clean references).
- `sidd`: SIDD-Medium tiles and the SIDD validation and benchmark blocks.
- `dnd`: the DND sRGB benchmark and its submission bundles.
- `prepare`: each dataset built once per run: process 0 builds, the others wait.
- `pipeline`: the deterministic, resumable tf.data pipeline of random crops and flips.
- `tiles`: training crops from a tiled, random-access dataset (SIDD-Medium).
"""
