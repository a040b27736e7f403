"""SIDD (Abdelhamed et al., CVPR 2018) as TFDS builders, from files the user downloaded.

Files in `manual_dir` (any of): SIDD_Medium_Srgb/Data/<scene folder>/<id>_NOISY_SRGB_<k>.PNG
and <id>_GT_SRGB_<k>.PNG (sidd_medium_srgb), ValidationNoisyBlocksSrgb.mat and
ValidationGtBlocksSrgb.mat (sidd_validation_srgb), BenchmarkNoisyBlocksSrgb.mat
(sidd_benchmark_srgb), optionally SIDD_Benchmark_Data/<scene folder>/ (names only, for phone
and ISO). SIDD-Medium is stored as overlapping 512x512 PNG tiles in ArrayRecord files, read by
index. Layout, metadata and storage costs: docs/data.md#sidd.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils.epath import Path  # local paths and bucket URLs (gs://) alike

from sassid_jax.errors import UserInputError
from sassid_jax.io.matfiles import MatFileError, read_array
from sassid_jax.io.photos import read_rgb8

PHONES = {
    "GP": "Google Pixel",
    "IP": "iPhone 7",
    "S6": "Samsung Galaxy S6 Edge",
    "N6": "Motorola Nexus 6",
    "G4": "LG G4",
}
BRIGHTNESS = {"L": "low light", "N": "normal brightness", "H": "high exposure"}
SCENE_PATTERN = re.compile(
    r"(?P<instance>\d{4})_(?P<scene>\d{3})_(?P<phone>[A-Z0-9]{2})_(?P<iso>\d+)_"
    r"(?P<shutter>\d+)_(?P<illuminant>\d+)_(?P<brightness>[A-Z])"
)
NOISY_PATTERN = re.compile(r"(?P<id>\d{4})_NOISY_SRGB_(?P<k>\d{3})\.png", re.IGNORECASE)
BLOCK_FILES = {
    "validation_noisy": "ValidationNoisyBlocksSrgb",
    "validation_gt": "ValidationGtBlocksSrgb",
    "benchmark_noisy": "BenchmarkNoisyBlocksSrgb",
}
METADATA_FIELDS = ("scene_instance", "scene", "phone", "iso", "shutter", "illuminant", "brightness")


class SiddFilesError(UserInputError, ValueError):
    """Missing or malformed SIDD files; str() names the file and what is wrong."""


def parse_scene_folder(name: str) -> dict[str, Any]:
    """Metadata of a SIDD scene folder name, e.g. 0052_002_S6_01600_01000_5500_N.

    Returns a dict with scene_instance, scene, iso, shutter, illuminant (int) and phone,
    brightness (str codes). Raises SiddFilesError for a name that does not follow SIDD's.
    """
    m = SCENE_PATTERN.fullmatch(name)
    if not m or m["phone"] not in PHONES or m["brightness"] not in BRIGHTNESS:
        raise SiddFilesError(
            f"{name}: not a SIDD scene folder name (expected e.g. 0052_002_S6_01600_01000_5500_N "
            f"with phone in {sorted(PHONES)} and brightness in {sorted(BRIGHTNESS)})"
        )
    return {
        "scene_instance": int(m["instance"]),
        "scene": int(m["scene"]),
        "phone": m["phone"],
        "iso": int(m["iso"]),
        "shutter": int(m["shutter"]),
        "illuminant": int(m["illuminant"]),
        "brightness": m["brightness"],
    }


def medium_data_dir(manual_dir: Path) -> Path:
    """The `Data` folder of SIDD_Medium_Srgb under manual_dir (or manual_dir/Data)."""
    for candidate in (manual_dir / "SIDD_Medium_Srgb" / "Data", manual_dir / "Data"):
        if candidate.is_dir():
            return candidate
    raise SiddFilesError(
        f"{manual_dir}: no SIDD_Medium_Srgb/Data folder (download SIDD-Medium "
        "sRGB and unpack it there)"
    )


def medium_pairs(data_dir: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    """(noisy PNG, GT PNG, scene metadata) for every noisy image under SIDD-Medium's Data.

    Raises SiddFilesError for a badly named scene folder, a noisy image without its GT
    partner, or no pairs at all.
    """
    pairs = []
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        meta = parse_scene_folder(folder.name)
        for noisy in sorted(folder.iterdir()):
            m = NOISY_PATTERN.fullmatch(noisy.name)
            if not m:
                continue
            gt = noisy.with_name(f"{m['id']}_GT_SRGB_{m['k']}{noisy.suffix}")
            if not gt.is_file():
                raise SiddFilesError(f"{noisy}: its ground truth {gt.name} is missing")
            pairs.append((noisy, gt, {**meta, "image": f"{folder.name}/{m['k']}"}))
    if not pairs:
        raise SiddFilesError(f"{data_dir}: no <id>_NOISY_SRGB_<k>.PNG images in its scene folders")
    return pairs


def tile_origins(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles along one axis: every `stride`, plus one flush with the end.

    Args:
      size: the image's length along the axis, in pixels.
      tile, stride: the tile side and the step between tiles.
    Returns:
      the offsets, ascending; empty when size < tile.
    """
    if size < tile:
        return []
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _metadata_features() -> dict[str, Any]:
    return {
        "scene_instance": np.int32,
        "scene": np.int32,
        "phone": tfds.features.Text(),
        "iso": np.int32,
        "shutter": np.int32,
        "illuminant": np.int32,
        "brightness": tfds.features.Text(),
    }


@dataclasses.dataclass
class SiddMediumConfig(tfds.core.BuilderConfig):
    """Tile geometry of the stored SIDD-Medium: `tile`-sided tiles every `stride` pixels
    (plus tiles flush with the right and bottom borders). Every square window of side
    <= tile - stride lies inside at least one tile, so training crops up to that size can
    be cut from single tiles (crop_size is checked against it)."""

    tile: int = 512
    stride: int = 256


DEFAULT_MEDIUM_CONFIG = SiddMediumConfig(name="tile512_stride256", tile=512, stride=256)


def medium_config(tile: int = 512, stride: int = 256) -> SiddMediumConfig:
    """The builder config for a tile geometry (each geometry is prepared separately).

    Args:
      tile: the tile side (dataset.tile).
      stride: the step between tiles (dataset.tile_stride), in [1, tile]; ValueError else.
    """
    if not 0 < stride <= tile:
        raise ValueError(f"dataset.tile_stride {stride} must be in [1, dataset.tile={tile}]")
    if (tile, stride) == (DEFAULT_MEDIUM_CONFIG.tile, DEFAULT_MEDIUM_CONFIG.stride):
        return DEFAULT_MEDIUM_CONFIG
    return SiddMediumConfig(name=f"tile{tile}_stride{stride}", tile=tile, stride=stride)


class SiddMediumSrgb(tfds.core.GeneratorBasedBuilder):
    """SIDD-Medium sRGB, noisy/GT pairs cut into overlapping (tile, tile, 3) uint8 tiles."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: overlapping PNG tiles in ArrayRecord files."}
    BUILDER_CONFIGS = [DEFAULT_MEDIUM_CONFIG]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unpack SIDD_Medium_Srgb.zip so that manual_dir holds "
        "SIDD_Medium_Srgb/Data/<scene folders>."
    )
    code_path = None  # no checksums file to look up (see embedded.SaslEmbedded)

    def _info(self) -> tfds.core.DatasetInfo:
        tile = self.builder_config.tile
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "noisy": tfds.features.Image(shape=(tile, tile, 3), dtype=np.uint8),
                    "clean": tfds.features.Image(shape=(tile, tile, 3), dtype=np.uint8),
                    "image": tfds.features.Text(),
                    "top": np.int32,
                    "left": np.int32,
                    **_metadata_features(),
                }
            ),
            supervised_keys=("noisy", "clean"),
            homepage="https://abdokamel.github.io/sidd/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        pairs = medium_pairs(medium_data_dir(Path(dl_manager.manual_dir)))
        return {"train": self._generate_examples(pairs)}

    def _generate_examples(self, pairs: list) -> Iterator[tuple[str, dict[str, Any]]]:
        tile, stride = self.builder_config.tile, self.builder_config.stride
        for noisy_path, gt_path, meta in pairs:
            noisy, clean = read_rgb8(noisy_path), read_rgb8(gt_path)
            if noisy.shape != clean.shape:
                raise SiddFilesError(
                    f"{gt_path}: shape {clean.shape} differs from its noisy "
                    f"image {noisy_path} {noisy.shape}"
                )
            h, w = noisy.shape[:2]
            if min(h, w) < tile:
                raise SiddFilesError(f"{noisy_path}: {h}x{w} is smaller than the tile {tile}")
            for top in tile_origins(h, tile, stride):
                for left in tile_origins(w, tile, stride):
                    window = np.s_[top : top + tile, left : left + tile]
                    yield (
                        f"{meta['image']}/{top}/{left}",
                        {
                            "noisy": noisy[window],
                            "clean": clean[window],
                            "top": top,
                            "left": left,
                            **{k: meta[k] for k in ("image", *METADATA_FIELDS)},
                        },
                    )


def read_blocks(manual_dir: Path, which: str) -> np.ndarray:
    """One SIDD block file of manual_dir.

    Args:
      manual_dir: the folder holding the .mat files.
      which: a key of BLOCK_FILES ('validation_noisy', 'validation_gt', 'benchmark_noisy').
    Returns:
      (images, blocks, H, W, 3) uint8 (SIDD: (40, 32, 256, 256, 3)). SiddFilesError naming
      the file.
    """
    key = BLOCK_FILES[which]
    path = manual_dir / f"{key}.mat"
    try:
        blocks = read_array(path, key, shape=(None, None, None, None, 3), dtype=np.uint8)
    except MatFileError as e:
        raise SiddFilesError(str(e)) from e
    if blocks.size == 0:
        raise SiddFilesError(f"{path}: {key!r} holds no blocks (shape {blocks.shape})")
    return blocks


def block_metadata(manual_dir: Path, num_images: int) -> list[dict[str, Any]] | None:
    """Scene metadata of the block files' images from SIDD_Benchmark_Data's folder names.

    Args:
      manual_dir: the folder holding SIDD_Benchmark_Data/.
      num_images: images in the block files; SiddFilesError unless that many folders.
    Returns:
      one `parse_scene_folder` dict per image (sorted folder names), or None when the
      folder is absent.
    """
    folder = manual_dir / "SIDD_Benchmark_Data"
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(names) != num_images:
        raise SiddFilesError(
            f"{folder}: {len(names)} scene folders, but the block files hold {num_images} images"
        )
    return [parse_scene_folder(n) for n in names]


class _SiddBlocks(tfds.core.GeneratorBasedBuilder):
    """Shared generator of the validation and benchmark block builders."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    code_path = None
    NOISY = ""
    GT: str | None = None

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "noisy": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
            "image_index": np.int32,
            "block_index": np.int32,
            "has_metadata": np.bool_,
            **_metadata_features(),
        }
        if self.GT:
            features["clean"] = tfds.features.Image(shape=(None, None, 3), dtype=np.uint8)
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=tfds.features.FeaturesDict(features),
            homepage="https://abdokamel.github.io/sidd/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        return {self.SPLIT: self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, manual_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        noisy = read_blocks(manual_dir, self.NOISY)
        clean = read_blocks(manual_dir, self.GT) if self.GT else None
        if clean is not None and clean.shape != noisy.shape:
            raise SiddFilesError(
                f"{manual_dir / (BLOCK_FILES[self.GT] + '.mat')}: shape {clean.shape} differs "
                f"from the noisy blocks {noisy.shape}"
            )
        meta = block_metadata(manual_dir, noisy.shape[0])
        blank = {
            "scene_instance": -1,
            "scene": -1,
            "phone": "",
            "iso": -1,
            "shutter": -1,
            "illuminant": -1,
            "brightness": "",
        }
        for i in range(noisy.shape[0]):
            for j in range(noisy.shape[1]):
                example = {
                    "noisy": noisy[i, j],
                    "image_index": i,
                    "block_index": j,
                    "has_metadata": meta is not None,
                    **(meta[i] if meta else blank),
                }
                if clean is not None:
                    example["clean"] = clean[i, j]
                yield f"{i:03d}_{j:03d}", example


class SiddValidationSrgb(_SiddBlocks):
    """SIDD sRGB validation: 40 x 32 noisy 256x256 blocks with their ground truth."""

    NOISY, GT, SPLIT = "validation_noisy", "validation_gt", "validation"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put ValidationNoisyBlocksSrgb.mat and ValidationGtBlocksSrgb.mat in manual_dir."
    )


class SiddBenchmarkSrgb(_SiddBlocks):
    """SIDD sRGB benchmark: 40 x 32 noisy 256x256 blocks (no ground truth; submit online)."""

    NOISY, GT, SPLIT = "benchmark_noisy", None, "benchmark"
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put BenchmarkNoisyBlocksSrgb.mat in manual_dir."
