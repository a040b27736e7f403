"""Dataset names a config may use, and how each yields training images and eval examples.

- `sasl_embedded`: scikit-image photos with simulated camera noise (no download).
- `image_folder`: a user's own noisy photos read directly (`dataset.noisy_dir`), optionally
  with clean references of the same file names (`dataset.clean_dir`, evaluation only).
  Evaluation reads the same folders unless `dataset.eval_noisy_dir` / `eval_clean_dir` name
  others (e.g. train on many noisy photos, score on the few that have references).
- `noisy_image_folder`: the same folders through a TFDS builder (prepared once per folder
  content in `dataset.data_dir`; see data/folder.py).
- `sidd_medium_srgb`: SIDD-Medium sRGB as overlapping tiles (training; see data/sidd.py).
- `sidd_validation_srgb`, `sidd_benchmark_srgb`: the SIDD 40 x 32 blocks (the paper's
  validation, and its test set without ground truth; both can also be trained on).
- `dnd_srgb`: the DND benchmark boxes (submission only; see data/dnd.py).
The SIDD and DND builders read what the user downloaded from `dataset.manual_dir` once.

Training images are (H, W, 3) uint8 in [0, 255] (a list), or a `tiles.TileSource` for
SIDD-Medium; eval examples are dicts with `noisy`, `clean` (uint8, or None without
references) and `name` (SIDD blocks add image_index, block_index, phone and iso).
The evaluation dataset is `dataset.eval_name` (default: `dataset.name`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from sassid_jax.data.tiles import TileSource

KNOWN_DATASETS = (
    "sasl_embedded",
    "image_folder",
    "noisy_image_folder",
    "sidd_medium_srgb",
    "sidd_validation_srgb",
    "sidd_benchmark_srgb",
    "dnd_srgb",
)
BLOCK_SPLITS = {"sidd_validation_srgb": "validation", "sidd_benchmark_srgb": "benchmark"}


class DatasetUnavailableError(RuntimeError):
    """The dataset is known but its files or builder are not available on this machine."""


def check_dataset_name(name: str, field: str = "dataset.name") -> None:
    """Raise ValueError naming the field and value for an unknown dataset name."""
    if name not in KNOWN_DATASETS:
        raise ValueError(f"{field}: unknown dataset {name!r}; known: {KNOWN_DATASETS}")


def prepared_builder(name: str, cfg: Any, **kwargs: Any) -> tfds.core.DatasetBuilder:
    """The SIDD / DND builder `name`, prepared from cfg.manual_dir unless already prepared.

    Raises DatasetUnavailableError (prepare it first, naming the files) when it is not
    prepared and no manual_dir is set.
    """
    from sassid_jax.data import dnd, sidd

    classes = {
        "sidd_medium_srgb": sidd.SiddMediumSrgb,
        "sidd_validation_srgb": sidd.SiddValidationSrgb,
        "sidd_benchmark_srgb": sidd.SiddBenchmarkSrgb,
        "dnd_srgb": dnd.DndSrgb,
    }
    builder = classes[name](data_dir=cfg.get("data_dir") or None, **kwargs)
    manual_dir = cfg.get("manual_dir", "")
    if not builder.is_prepared():
        if not manual_dir:
            raise DatasetUnavailableError(
                f"dataset {name!r}: prepare {'DND' if name == 'dnd_srgb' else 'SIDD'} first: "
                f"download the files listed in "
                f"{classes[name].__module__.replace('.', '/')}.py and set "
                f"--config.dataset.manual_dir to their folder (prepared once, into "
                f"{builder.data_dir})"
            )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    return builder


def sidd_blocks(name: str, cfg: Any) -> list[dict[str, Any]]:
    """The SIDD validation or benchmark blocks as eval examples, in (image, block) order."""
    builder = prepared_builder(name, cfg)
    examples = []
    for e in tfds.as_numpy(builder.as_dataset(split=BLOCK_SPLITS[name], shuffle_files=False)):
        i, j = int(e["image_index"]), int(e["block_index"])
        examples.append(
            {
                "noisy": e["noisy"],
                "clean": e.get("clean"),
                "name": f"{i:02d}_{j:02d}",
                "image_index": i,
                "block_index": j,
                "phone": e["phone"].decode() if e["has_metadata"] else None,
                "iso": int(e["iso"]) if e["has_metadata"] else None,
            }
        )
    return sorted(examples, key=lambda e: (e["image_index"], e["block_index"]))


def sidd_medium_tiles(cfg: Any) -> TileSource:
    """SIDD-Medium's stored tiles for random-access training crops (noisy only)."""
    from sassid_jax.data.sidd import medium_config

    geometry = medium_config(cfg.get("tile", 512), cfg.get("tile_stride", 256))
    builder = prepared_builder("sidd_medium_srgb", cfg, config=geometry, file_format="array_record")
    source = builder.as_data_source("train", decoders={"clean": tfds.decode.SkipDecoding()})
    return TileSource(
        source,
        tile=geometry.tile,
        max_crop=geometry.tile - geometry.stride,
        name="sidd_medium_srgb",
    )


def _folder(cfg: Any, evaluation: bool) -> list[dict[str, Any]]:
    from sassid_jax.data.folder import folder_examples, load_folder

    noisy_field, clean_field = "noisy_dir", "clean_dir"
    if evaluation and cfg.get("eval_noisy_dir"):
        noisy_field, clean_field = "eval_noisy_dir", "eval_clean_dir"
    noisy_dir, clean_dir = cfg.get(noisy_field, ""), cfg.get(clean_field, "")
    if cfg.name == "noisy_image_folder":
        return load_folder(noisy_dir, clean_dir, cfg.get("data_dir") or None)
    return list(
        folder_examples(noisy_dir, clean_dir, noisy_field=noisy_field, clean_field=clean_field)
    )


def load_train_images(cfg: Any) -> list[np.ndarray] | TileSource:
    """Noisy training images of `cfg` (the config's `dataset` block)."""
    check_dataset_name(cfg.name)
    if cfg.name == "sasl_embedded":
        from sassid_jax.data.embedded import load_split

        return [e["noisy"] for e in load_split(cfg.train_split, cfg.data_dir or None)]
    if cfg.name in ("image_folder", "noisy_image_folder"):
        return [e["noisy"] for e in _folder(cfg, evaluation=False)]
    if cfg.name == "sidd_medium_srgb":
        return sidd_medium_tiles(cfg)
    if cfg.name in BLOCK_SPLITS:
        return [e["noisy"] for e in sidd_blocks(cfg.name, cfg)]
    raise ValueError(
        f"dataset.name: {cfg.name!r} has no training images (benchmark boxes "
        "only: use --mode submit)"
    )


def load_eval_examples(cfg: Any) -> list[dict[str, Any]]:
    """Eval examples of `cfg`: dicts with noisy, clean (or None) and name."""
    name = cfg.get("eval_name") or cfg.name
    check_dataset_name(name, "dataset.eval_name" if cfg.get("eval_name") else "dataset.name")
    if name == "sasl_embedded":
        from sassid_jax.data.embedded import load_split

        return [
            {"noisy": e["noisy"], "clean": e["clean"], "name": e["name"]}
            for e in load_split(cfg.eval_split, cfg.data_dir or None)
        ]
    if name in ("image_folder", "noisy_image_folder"):
        return _folder(cfg, evaluation=True)
    if name in BLOCK_SPLITS:
        return sidd_blocks(name, cfg)
    raise ValueError(
        f"dataset: {name!r} cannot be evaluated here (no ground truth and no "
        "whole images; sidd_medium_srgb: validate on eval_name="
        "'sidd_validation_srgb'; dnd_srgb: use --mode submit)"
    )
