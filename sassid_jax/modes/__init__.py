"""The commands behind `--mode`: one module per mode (`train` is `sassid_jax/train.py`).

- `evaluate`: `--mode eval`: score one trained network on the config's evaluation data.
- `submit`: `--mode submit`: SIDD and DND benchmark submission files.
- `denoise`: `--mode denoise`: a trained network on your photos (files or folders).
- `analyze`: `--mode analyze`: the noise of your photos, from the noisy photos alone.
- `prepare`: `--mode prepare`: build the config's datasets once.
"""
