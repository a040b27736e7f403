"""SIDD (Abdelhamed et al., CVPR 2018) as TFDS builders, from files the user downloaded.

Point `manual_dir` at one folder holding whichever of these you downloaded:

    <manual_dir>/SIDD_Medium_Srgb/Data/<scene folder>/<id>_NOISY_SRGB_<k>.PNG   (sidd_medium_srgb)
                                                    /<id>_GT_SRGB_<k>.PNG
    <manual_dir>/ValidationNoisyBlocksSrgb.mat   (sidd_validation_srgb)
    <manual_dir>/ValidationGtBlocksSrgb.mat
    <manual_dir>/BenchmarkNoisyBlocksSrgb.mat    (sidd_benchmark_srgb)
    <manual_dir>/SIDD_Benchmark_Data/<scene folder>/   optional: only the 40 folder names are
                                                    read, for the per-phone / per-ISO breakdown

SIDD-Medium has 160 scene folders x 2 pairs = 320 noisy/GT pairs of about 5328x3000. Scene
folders are named `<instance>_<scene>_<phone>_<ISO>_<shutter>_<illuminant K>_<brightness>`,
e.g. `0052_002_S6_01600_01000_5500_N`; that metadata is recorded with every example.
The block files hold uint8 arrays (40 images, 32 blocks, 256, 256, 3) under the key named
like the file. The 40 images of the blocks are taken to be the SIDD_Benchmark_Data scene
folders in sorted order (the only place their metadata is published).

Storage of SIDD-Medium: decoding a 12-megapixel PNG costs ~0.5 s, so training cannot decode
whole images per crop. The builder cuts every pair into overlapping `tile x tile` tiles at
`stride` (default 512 at 256: every 256x256 window of an image lies inside some tile) and
stores them as PNGs in ArrayRecord files, which TFDS reads by index: a training crop is one
random-access read and one 512x512 decode (reader threads: one per core this process may run
on). `bench/sidd_crops.py` measured, on this project's 2-core CPU (quiet), 138 crops/s from
the tiles pinned to one core and 209 on two (batch 8 of 256x256), against 2.7 crops/s
decoding whole 16 MP PNGs. The price is disk: the tiles took 3.5x the bytes of
the download (2x2 overlap), i.e. ~45 GB for SIDD-Medium's ~13 GB.
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
    """Metadata of a SIDD scene folder name (see the module docstring).

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
    """Start offsets of tiles along one axis: every `stride`, plus one flush with the end."""
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
    """The builder config for this tile geometry (each geometry is prepared separately)."""
    if not 0 < stride <= tile:
        raise ValueError(f"dataset.tile_stride {stride} must be in [1, dataset.tile={tile}]")
    if (tile, stride) == (DEFAULT_MEDIUM_CONFIG.tile, DEFAULT_MEDIUM_CONFIG.stride):
        return DEFAULT_MEDIUM_CONFIG
    return SiddMediumConfig(name=f"tile{tile}_stride{stride}", tile=tile, stride=stride)


class SiddMediumSrgb(tfds.core.GeneratorBasedBuilder):
    """SIDD-Medium sRGB, noisy/GT pairs cut into overlapping tiles (see module docstring)."""

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
    """The (images, blocks, H, W, 3) uint8 array of one SIDD block file in manual_dir."""
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
    """Scene metadata of the block files' images from SIDD_Benchmark_Data's folder names,
    or None when that folder is absent."""
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
