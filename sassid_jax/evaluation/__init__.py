"""Evaluation: the published protocol's scores, the end-of-training report and its panels.

- `metrics`: the protocol's rounding, PSNR, SSIM and the colour shift.
- `scoring`: predictions and scores of trained networks on evaluation examples.
- `report`: the end-of-training table, `results.json` rows and panels.
- `panels`: side-by-side comparison panels as one PNG.
"""
