"""Dataset names a config may use: a registry of sources, name -> `Source`.

A `Source` says what a dataset yields for training (a list of (H, W, 3) uint8 photos, or a
`tiles.TileSource`) and evaluation (dicts with noisy, clean or None, and name), and which TFDS
builder prepares it. Every function takes `cfg`, the config's `dataset` block. The names and
what each can do: docs/data.md#dataset-names.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sassid_jax.data.prepare import Prepared, prepare_once, wait_seconds
from sassid_jax.data.tiles import TileSource
from sassid_jax.errors import ConfigError, UserInputError


class DatasetUnavailableError(UserInputError):
    """The dataset is known but its files or builder are not available on this machine."""


class Source:
    """One dataset name: what it yields for training and evaluation, and its TFDS builder.

    The base refuses training and evaluation with the reason; subclasses override what their
    dataset provides and set the flags to match.
    """

    name: str = ""
    can_train: bool = False
    can_evaluate: bool = False  # whole images, possibly with clean references
    submittable: bool = False  # a benchmark with an online submission (--mode submit)
    builder: str = ""  # "module:Class" of the TFDS builder prepared from manual_dir

    def training_refused(self) -> ConfigError:
        """The error of a source with no training images (can_train False)."""
        return ConfigError(
            f"dataset.name: {self.name!r} has no training images (benchmark boxes "
            "only: use --mode submit)"
        )

    def evaluation_refused(self) -> ConfigError:
        """The error of a source that cannot be scored (can_evaluate False)."""
        return ConfigError(
            f"dataset: {self.name!r} cannot be evaluated here (no ground truth and no "
            "whole images; sidd_medium_srgb: validate on eval_name="
            "'sidd_validation_srgb'; dnd_srgb: use --mode submit)"
        )

    def train_images(self, cfg: Any) -> list[np.ndarray] | TileSource:
        """Noisy training images, (H, W, 3) uint8 in [0, 255] each, or a TileSource."""
        raise self.training_refused()

    def eval_examples(self, cfg: Any) -> list[dict[str, Any]]:
        """Eval examples: dicts with noisy, clean ((H, W, 3) uint8, clean None without a
        reference) and name."""
        raise self.evaluation_refused()

    def evaluates_training_images(self, cfg: Any) -> bool:
        """Whether eval_examples(cfg) are the photos train_images(cfg) trains on."""
        return False

    def prepare(self, cfg: Any, evaluation: bool = False) -> list[Prepared]:
        """Prepare what training on `cfg` reads.

        Args:
          cfg: the config's dataset block.
          evaluation: prepare what evaluation reads instead (folder sources: the
            eval_noisy_dir / eval_clean_dir folders when set).
        Returns:
          what happened to each dataset.
        """
        if not self.builder:
            return [Prepared(self.name, "no TFDS dataset", "nothing to prepare")]
        return [prepare_builder(self.name, cfg)]

    def builder_class(self) -> type[tfds.core.DatasetBuilder]:
        """The TFDS builder class (imported on first use: SIDD/DND code loads lazily)."""
        if not self.builder:
            raise ConfigError(f"dataset {self.name!r} has no prepared TFDS builder")
        module, cls = self.builder.split(":")
        return getattr(importlib.import_module(module), cls)


class EmbeddedSource(Source):
    """`sasl_embedded`: scikit-image photos with simulated noise (train and test splits)."""

    name, can_train, can_evaluate = "sasl_embedded", True, True

    def prepare(self, cfg: Any, evaluation: bool = False) -> list[Prepared]:
        # late: the builder loads TensorFlow, only for a dataset in use
        from sassid_jax.data.embedded import prepare_embedded

        return [prepare_embedded(cfg.get("data_dir") or None, wait_seconds(cfg))]

    def _split(self, cfg: Any, split: str) -> list[dict[str, Any]]:
        # late: the builder loads TensorFlow, only for a dataset in use
        from sassid_jax.data.embedded import load_split

        return load_split(split, cfg.get("data_dir") or None, wait_seconds(cfg))

    def train_images(self, cfg: Any) -> list[np.ndarray]:
        return [e["noisy"] for e in self._split(cfg, cfg.train_split)]

    def eval_examples(self, cfg: Any) -> list[dict[str, Any]]:
        return [
            {"noisy": e["noisy"], "clean": e["clean"], "name": e["name"]}
            for e in self._split(cfg, cfg.eval_split)
        ]

    def evaluates_training_images(self, cfg: Any) -> bool:
        return cfg.train_split == cfg.eval_split


class FolderSource(Source):
    """A user's photo folders, read directly or through the `noisy_image_folder` builder."""

    can_train, can_evaluate = True, True

    def __init__(self, name: str, through_tfds: bool) -> None:
        self.name, self.through_tfds = name, through_tfds

    @staticmethod
    def _fields(cfg: Any, evaluation: bool) -> tuple[str, str]:
        """The config fields naming the noisy and clean folders read."""
        if evaluation and cfg.get("eval_noisy_dir"):
            return "eval_noisy_dir", "eval_clean_dir"
        return "noisy_dir", "clean_dir"

    def prepare(self, cfg: Any, evaluation: bool = False) -> list[Prepared]:
        # late: the builder loads TensorFlow, only for a dataset in use
        from sassid_jax.data.folder import prepare_folder

        noisy_field, clean_field = self._fields(cfg, evaluation)
        noisy_dir, clean_dir = cfg.get(noisy_field, ""), cfg.get(clean_field, "")
        if not self.through_tfds:
            where = f"photos read directly from dataset.{noisy_field} {noisy_dir!r}"
            return [Prepared(self.name, where, "nothing to prepare")]
        data_dir, limit = cfg.get("data_dir") or None, cfg.get("max_pixels") or None
        return [prepare_folder(noisy_dir, clean_dir, data_dir, limit, wait_seconds(cfg))]

    def _examples(self, cfg: Any, evaluation: bool) -> list[dict[str, Any]]:
        # late: the builder loads TensorFlow, only for a dataset in use
        from sassid_jax.data.folder import folder_examples, load_folder

        noisy_field, clean_field = self._fields(cfg, evaluation)
        noisy_dir, clean_dir = cfg.get(noisy_field, ""), cfg.get(clean_field, "")
        limit = cfg.get("max_pixels") or None  # 0 / absent: the photo reader's default limit
        if self.through_tfds:
            data_dir = cfg.get("data_dir") or None
            return load_folder(noisy_dir, clean_dir, data_dir, limit, wait_seconds(cfg))
        return list(
            folder_examples(
                noisy_dir,
                clean_dir,
                noisy_field=noisy_field,
                clean_field=clean_field,
                max_pixels=limit,
            )
        )

    def train_images(self, cfg: Any) -> list[np.ndarray]:
        return [e["noisy"] for e in self._examples(cfg, evaluation=False)]

    def eval_examples(self, cfg: Any) -> list[dict[str, Any]]:
        return self._examples(cfg, evaluation=True)

    def evaluates_training_images(self, cfg: Any) -> bool:
        return not cfg.get("eval_noisy_dir")


class SiddMediumSource(Source):
    """`sidd_medium_srgb`: training crops from the stored tiles (no whole images to score)."""

    name, can_train, builder = "sidd_medium_srgb", True, "sassid_jax.data.sidd:SiddMediumSrgb"

    def prepare(self, cfg: Any, evaluation: bool = False) -> list[Prepared]:
        return [prepare_builder(self.name, cfg, **medium_builder_kwargs(cfg))]

    def train_images(self, cfg: Any) -> TileSource:
        return sidd_medium_tiles(cfg)


class SiddBlocksSource(Source):
    """The SIDD 256 x 256 blocks of one split (validation with references, or benchmark)."""

    can_train, can_evaluate = True, True

    def __init__(self, name: str, split: str, builder: str, submittable: bool) -> None:
        self.name, self.split, self.builder = name, split, builder
        self.submittable = submittable

    def train_images(self, cfg: Any) -> list[np.ndarray]:
        return [e["noisy"] for e in sidd_blocks(self.name, cfg)]

    def eval_examples(self, cfg: Any) -> list[dict[str, Any]]:
        return sidd_blocks(self.name, cfg)

    def evaluates_training_images(self, cfg: Any) -> bool:
        return True


class DndSource(Source):
    """`dnd_srgb`: the DND benchmark boxes (submission only)."""

    name, submittable, builder = "dnd_srgb", True, "sassid_jax.data.dnd:DndSrgb"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        EmbeddedSource(),
        FolderSource("image_folder", through_tfds=False),
        FolderSource("noisy_image_folder", through_tfds=True),
        SiddMediumSource(),
        SiddBlocksSource(
            "sidd_validation_srgb", "validation", "sassid_jax.data.sidd:SiddValidationSrgb", False
        ),
        SiddBlocksSource(
            "sidd_benchmark_srgb", "benchmark", "sassid_jax.data.sidd:SiddBenchmarkSrgb", True
        ),
        DndSource(),
    )
}
KNOWN_DATASETS = tuple(SOURCES)
SUBMIT_DATASETS = tuple(name for name, s in SOURCES.items() if s.submittable)


def check_dataset_name(name: str, field: str = "dataset.name") -> None:
    """Raise ConfigError for an unknown dataset name.

    Args:
      name: the dataset name.
      field: the config field named in the message.
    """
    if name not in SOURCES:
        raise ConfigError(f"{field}: unknown dataset {name!r}; known: {KNOWN_DATASETS}")


def get_source(name: str, field: str = "dataset.name") -> Source:
    """The registered source of a dataset name.

    Args:
      name: the dataset name.
      field: the config field named in the ConfigError when it is unknown.
    """
    check_dataset_name(name, field)
    return SOURCES[name]


def eval_dataset_name(cfg: Any) -> tuple[str, str]:
    """(name, field) of the dataset evaluated on: dataset.eval_name, else dataset.name."""
    if cfg.get("eval_name"):
        return cfg.eval_name, "dataset.eval_name"
    return cfg.name, "dataset.name"


def evaluates_training_images(cfg: Any) -> bool:
    """Whether `cfg` scores a run on the photos it trained on (no separate evaluation photos)."""
    name, field = eval_dataset_name(cfg)
    return name == cfg.name and get_source(name, field).evaluates_training_images(cfg)


def check_evaluable(cfg: Any) -> None:
    """Raise ConfigError unless the evaluation dataset of `cfg` is known and can be scored."""
    source = get_source(*eval_dataset_name(cfg))
    if not source.can_evaluate:
        raise source.evaluation_refused()


def prepare_builder(name: str, cfg: Any, **kwargs: Any) -> Prepared:
    """Prepare the SIDD / DND builder `name` from cfg.manual_dir once.

    Only process 0 of a run prepares (and needs manual_dir); the others wait for it
    (`prepare.prepare_once`).

    Args:
      name: the dataset name.
      cfg: the config's dataset block (manual_dir, data_dir, prepare_timeout).
      **kwargs: the builder's own arguments (SIDD-Medium: `medium_builder_kwargs`).
    Returns:
      what happened, with the builder ready to read.
    Raises:
      DatasetUnavailableError: not prepared and no manual_dir set (names the files to get).
    """
    cls = get_source(name).builder_class()
    manual_dir = cfg.get("manual_dir", "")

    def build(builder: tfds.core.DatasetBuilder) -> None:
        if not manual_dir:
            raise DatasetUnavailableError(
                f"dataset {name!r}: prepare {'DND' if name == 'dnd_srgb' else 'SIDD'} first: "
                f"download the files listed in {cls.__module__.replace('.', '/')}.py and set "
                f"--config.dataset.manual_dir to their folder (prepared once, into "
                f"{builder.data_dir})"
            )
        _check_manual_dir(name, manual_dir, cls)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )

    def make() -> tfds.core.DatasetBuilder:
        return cls(data_dir=cfg.get("data_dir") or None, **kwargs)

    return prepare_once(name, make, build, wait_s=wait_seconds(cfg))


def _check_manual_dir(name: str, manual_dir: str, cls: type) -> None:
    """DatasetUnavailableError when dataset.manual_dir is no folder or an empty one (TFDS
    would assert), naming the files it needs (the builder's download instructions)."""
    folder = epath.Path(manual_dir)
    needs = " ".join(str(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", "")).split())
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
    elif not any(folder.iterdir()):
        problem = "is empty"
    else:
        return
    raise DatasetUnavailableError(
        f"dataset.manual_dir {manual_dir} {problem}: dataset {name!r} is prepared from it. {needs}"
    )


def prepared_builder(name: str, cfg: Any, **kwargs: Any) -> tfds.core.DatasetBuilder:
    """The SIDD / DND builder `name`, ready to read (arguments as `prepare_builder`)."""
    return prepare_builder(name, cfg, **kwargs).builder


def sidd_blocks(name: str, cfg: Any) -> list[dict[str, Any]]:
    """The SIDD validation or benchmark blocks as eval examples, in (image, block) order.

    Args:
      name: 'sidd_validation_srgb' or 'sidd_benchmark_srgb' (ConfigError otherwise).
      cfg: the config's dataset block.
    Returns:
      dicts with noisy, clean ((256, 256, 3) uint8; clean None for the benchmark), name
      ("<image>_<block>"), image_index, block_index, phone and iso (None without the
      SIDD_Benchmark_Data folder names).
    """
    source = get_source(name)
    if not isinstance(source, SiddBlocksSource):
        raise ConfigError(f"dataset {name!r} is not one of the SIDD block sets")
    builder = prepared_builder(name, cfg)
    examples = []
    for e in tfds.as_numpy(builder.as_dataset(split=source.split, shuffle_files=False)):
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


def medium_builder_kwargs(cfg: Any) -> dict[str, Any]:
    """SiddMediumSrgb's builder config (tile geometry) and file format (array_record)."""
    # late: the builder loads TensorFlow, only for a dataset in use
    from sassid_jax.data.sidd import medium_config

    geometry = medium_config(cfg.get("tile", 512), cfg.get("tile_stride", 256))
    return {"config": geometry, "file_format": "array_record"}


def sidd_medium_tiles(cfg: Any) -> TileSource:
    """SIDD-Medium's stored tiles for random-access training crops (noisy only)."""
    kwargs = medium_builder_kwargs(cfg)
    geometry = kwargs["config"]
    builder = prepared_builder("sidd_medium_srgb", cfg, **kwargs)
    source = builder.as_data_source("train", decoders={"clean": tfds.decode.SkipDecoding()})
    return TileSource(
        source,
        tile=geometry.tile,
        max_crop=geometry.tile - geometry.stride,
        name="sidd_medium_srgb",
    )


def load_train_images(cfg: Any) -> list[np.ndarray] | TileSource:
    """Noisy training images of `cfg` (the config's `dataset` block)."""
    return get_source(cfg.name).train_images(cfg)


def load_eval_examples(cfg: Any) -> list[dict[str, Any]]:
    """Eval examples of `cfg`: dicts with noisy, clean (or None) and name."""
    return get_source(*eval_dataset_name(cfg)).eval_examples(cfg)


def prepare_datasets(cfg: Any) -> list[Prepared]:
    """Prepare the training dataset of `cfg` and its evaluation dataset (dataset.eval_name),
    each once (`--mode prepare`); returns what happened to each."""
    done: dict[tuple[str, str], Prepared] = {}
    for (name, field), evaluation in (
        ((cfg.name, "dataset.name"), False),
        (eval_dataset_name(cfg), True),
    ):
        for prepared in get_source(name, field).prepare(cfg, evaluation):
            done.setdefault((prepared.name, prepared.where), prepared)
    return list(done.values())
