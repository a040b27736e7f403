"""Dataset names a config may use, and how each yields training images and eval examples.

- `sasl_embedded`: scikit-image photos with simulated camera noise (no download).
- `image_folder`: a user's own noisy photos (`dataset.noisy_dir`), optionally with clean
  references of the same file names (`dataset.clean_dir`, evaluation only). Training is
  self-supervised, so it uses the noisy images alone. Evaluation reads the same folders
  unless `dataset.eval_noisy_dir` / `dataset.eval_clean_dir` name others (e.g. train on many
  noisy photos, score on the few that have references).
- `sidd_medium_srgb`: the paper's data; needs the SIDD builders (not in this version yet).

Training images are (H, W, 3) uint8 in [0, 255]; eval examples are dicts with `noisy`,
`clean` (uint8, or None without references) and `name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

KNOWN_DATASETS = ("sasl_embedded", "image_folder", "sidd_medium_srgb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DatasetUnavailableError(RuntimeError):
    """The dataset is known but its files or builder are not available on this machine."""


def check_dataset_name(name: str) -> None:
    """Raise ValueError naming the field and value for an unknown dataset name."""
    if name not in KNOWN_DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; known: {KNOWN_DATASETS}")


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "L", "RGBA", "P"):
                raise ValueError(f"{path}: unsupported image mode {im.mode} (need 8-bit RGB)")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def _folder_images(folder: str, field: str) -> dict[str, Path]:
    root = Path(folder)
    if not folder or not root.is_dir():
        raise ValueError(f"{field}: {folder!r} is not a directory")
    files = {p.name: p for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise ValueError(f"{field}: no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return files


def _folder_examples(cfg: Any, evaluation: bool = False) -> list[dict[str, Any]]:
    noisy_field, clean_field = "noisy_dir", "clean_dir"
    if evaluation and cfg.get("eval_noisy_dir"):
        noisy_field, clean_field = "eval_noisy_dir", "eval_clean_dir"
    noisy_dir, clean_dir = cfg.get(noisy_field, ""), cfg.get(clean_field, "")
    noisy = _folder_images(noisy_dir, f"dataset.{noisy_field}")
    clean = _folder_images(clean_dir, f"dataset.{clean_field}") if clean_dir else {}
    examples = []
    for name, path in noisy.items():
        image = _read_rgb(path)
        reference = None
        if clean:
            if name not in clean:
                raise ValueError(f"{path}: no clean reference named {name} in {clean_dir}")
            reference = _read_rgb(clean[name])
            if reference.shape != image.shape:
                raise ValueError(
                    f"{clean[name]}: shape {reference.shape} differs from its noisy image "
                    f"{path} {image.shape}"
                )
        examples.append({"noisy": image, "clean": reference, "name": Path(name).stem})
    return examples


def _unavailable(name: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r}: prepare SIDD first. This version has no SIDD builder yet; train on "
        "your own SIDD noisy PNGs with dataset.name='image_folder' and dataset.noisy_dir=..."
    )


def load_train_images(cfg: Any) -> list[np.ndarray]:
    """Noisy training images of `cfg` (the config's `dataset` block)."""
    check_dataset_name(cfg.name)
    if cfg.name == "sasl_embedded":
        from sassid_jax.data.embedded import load_split

        return [e["noisy"] for e in load_split(cfg.train_split, cfg.data_dir or None)]
    if cfg.name == "image_folder":
        return [e["noisy"] for e in _folder_examples(cfg)]
    raise _unavailable(cfg.name)


def load_eval_examples(cfg: Any) -> list[dict[str, Any]]:
    """Eval examples of `cfg`: dicts with noisy, clean (or None) and name."""
    check_dataset_name(cfg.name)
    if cfg.name == "sasl_embedded":
        from sassid_jax.data.embedded import load_split

        return [
            {"noisy": e["noisy"], "clean": e["clean"], "name": e["name"]}
            for e in load_split(cfg.eval_split, cfg.data_dir or None)
        ]
    if cfg.name == "image_folder":
        return _folder_examples(cfg, evaluation=True)
    raise _unavailable(cfg.name)
