"""Files: photos, checkpoints and run folders, the authors' `.pth` files, `.mat` files, paths.

- `photos`: the one photo reader and writer (PNG, JPEG, TIFF; 8/16 bit, EXIF orientation, ICC).
- `photo_codecs`: the format decoders and encoders behind `photos` (imagecodecs, tifffile, Pillow).
- `photo_checks`: structure checks before decoding (one frame or page, data that fills the header).
- `checkpoints`: the run-folder layout and `load_network` from a run folder or a `.pth`.
- `torch_format`: a weights-only `.pth` reader (no PyTorch, no pickled code).
- `torch_params`: the authors' state_dict keys and layouts -> our Flax parameter trees.
- `matfiles`: MATLAB v5 / v7.3 (HDF5) files of the SIDD and DND benchmarks.
- `atomic_files`: the one atomic writer: a whole file at the target path, or nothing.
- `paths`: local paths and bucket URLs (gs://) alike, through etils.epath.
- `workdir_lock`: one run per run folder: the lock file and its stale-lock takeover.
"""
