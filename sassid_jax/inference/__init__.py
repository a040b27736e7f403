"""Inference: denoising images of any size, and what is done to every output.

- `predict`: whole-image, tiled (seam-free) and x8 self-ensemble prediction.
- `procedure`: a method's test-time procedure around its network (blind size, PD, R3).
- `colour_anchor`: outputs keep the noisy input's local mean colour, less the noise's bias.
- `quality_estimate`: an output's PSNR estimated from the noisy photo alone (MC-SURE).
- `safeguard`: the quality check of an output and the safeguard blend.
"""
