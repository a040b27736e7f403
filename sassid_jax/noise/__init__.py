"""Camera noise: the simulator, its statistics measured from noisy photos, its mean bias.

- `simulator`: camera-pipeline noise simulator: clean sRGB -> realistically noisy sRGB.
- `analysis`: noise level, 2-D correlation and cross-channel correlation from noisy photos alone.
- `blind_size`: `networks.bnn.blind_size = "auto"`: the BNN blind size from the training photos.
- `bias`: the mean bias that clipping and the sRGB gamma give camera noise.
"""
