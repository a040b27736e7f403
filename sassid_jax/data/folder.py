"""Your own noisy photos as a TFDS dataset: `noisy_image_folder`.

A folder of noisy photos (any format `io.photos` reads, stored as 8-bit RGB), optionally a
parallel folder of clean references matched by file name, used only for evaluation. Each
folder content gets its own builder config, named by a hash of the files, so a changed photo
prepares the dataset again (and one that changes while it is read is refused). Details:
docs/data.md#your-own-photos.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sassid_jax.data.prepare import DEFAULT_WAIT_S, Prepared, prepare_once
from sassid_jax.errors import ConfigError
from sassid_jax.io.paths import absolute, is_local
from sassid_jax.io.photos import IMAGE_SUFFIXES, photo_files, read_rgb8


def folder_images(folder: str, field: str) -> dict[str, epath.Path]:
    """{file name: path} of the images in a folder, sorted by name (`photos.photo_files`:
    hidden files left out, entries that are no regular file skipped with a warning).

    Args:
      folder: the folder, local or a bucket URL.
      field: the config field named in the ConfigError (a ValueError) when it is no folder,
        holds no image, or holds two photos of one name (a.png and a.jpg: the dataset keys
        photos by name without suffix).
    """
    root = epath.Path(folder)
    if not folder or not root.is_dir():
        raise ConfigError(f"{field}: {folder!r} is not a directory")
    files = {p.name: p for p in photo_files(root)}
    if not files:
        raise ConfigError(f"{field}: no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    stems: dict[str, str] = {}
    for name in files:
        other = stems.setdefault(os.path.splitext(name)[0], name)
        if other != name:
            raise ConfigError(
                f"{field}: {root / other} and {name} have the same name without suffix "
                f"({os.path.splitext(name)[0]!r}; photos are keyed by it): rename one"
            )
    return files


def folder_examples(
    noisy_dir: str,
    clean_dir: str = "",
    *,
    noisy_field: str = "noisy_dir",
    clean_field: str = "clean_dir",
    max_pixels: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yields per noisy photo, by file name: noisy, clean ((H, W, 3) uint8 in [0, 255], or
    None without references) and name (the file name without its suffix).

    Args:
      noisy_dir: the folder of noisy photos.
      clean_dir: the folder of clean references of the same file names ("": none).
      noisy_field, clean_field: the config fields named in messages.
      max_pixels: the largest width x height read (None: photos.DEFAULT_MAX_PIXELS).
    Raises:
      ConfigError: naming the file, for a noisy photo without its reference (when
        clean_dir is given) or a reference of another size (photos.PhotoError for an
        unreadable image). Both are UserInputErrors: one line and exit code 2 on the CLI.
    """
    noisy = folder_images(noisy_dir, f"dataset.{noisy_field}")
    clean = folder_images(clean_dir, f"dataset.{clean_field}") if clean_dir else {}
    for name, path in noisy.items():
        image, reference = read_rgb8(path, max_pixels), None
        if clean:
            if name not in clean:
                raise ConfigError(f"{path}: no clean reference named {name} in {clean_dir}")
            reference = read_rgb8(clean[name], max_pixels)
            if reference.shape != image.shape:
                raise ConfigError(
                    f"{clean[name]}: shape {reference.shape} differs from its "
                    f"noisy image {path} {image.shape}"
                )
        yield {"noisy": image, "clean": reference, "name": os.path.splitext(name)[0]}


def _fingerprint(noisy_dir: str, clean_dir: str) -> str:
    digest = hashlib.sha1()
    for folder in (noisy_dir, clean_dir):
        if not folder:
            continue
        root = absolute(folder)
        digest.update(str(root).encode())
        for path in photo_files(root):
            digest.update(f"{path.name}:{_stamp(path)}".encode())
    return digest.hexdigest()[:16]


def _stamp(path: epath.Path) -> str:
    """'size:modification time' of a file (ns locally, s on a bucket)."""
    if is_local(path):
        stat = os.stat(path)
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    stat = path.stat()
    return f"{stat.length}:{stat.mtime}"


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
    """The folders of one `noisy_image_folder` dataset."""

    noisy_dir: str = ""
    clean_dir: str = ""
    max_pixels: int | None = None  # the photo reader's pixel limit (None: its default)


def folder_config(
    noisy_dir: str, clean_dir: str = "", max_pixels: int | None = None
) -> FolderConfig:
    """The builder config of these folders, named by a hash of their content.

    Args:
      noisy_dir, clean_dir: the folders ("" clean_dir: no references); ConfigError when
        one is no folder or holds no image.
      max_pixels: the photo reader's pixel limit (None: its default).
    """
    noisy = folder_images(noisy_dir, "dataset.noisy_dir")  # fail early, naming the field
    if clean_dir:
        clean = folder_images(clean_dir, "dataset.clean_dir")
        missing = [name for name in noisy if name not in clean]
        if missing:
            raise ConfigError(
                f"dataset.clean_dir: no clean reference named {missing[0]} in {clean_dir} "
                f"(for {noisy[missing[0]]}; {len(missing)} of {len(noisy)} photos lack one)"
            )
    return FolderConfig(
        name=f"f{_fingerprint(noisy_dir, clean_dir)}",
        noisy_dir=str(absolute(noisy_dir)),
        clean_dir=str(absolute(clean_dir)) if clean_dir else "",
        max_pixels=max_pixels,
    )


class NoisyImageFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of noisy photos, with optional clean references (evaluation only)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    code_path = None  # nothing to download (see embedded.SaslEmbedded)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "noisy": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    # 1x1 black when the photo has no reference (has_clean False).
                    "clean": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    "has_clean": np.bool_,
                    "name": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        cfg = self.builder_config
        for example in folder_examples(cfg.noisy_dir, cfg.clean_dir, max_pixels=cfg.max_pixels):
            has_clean = example["clean"] is not None
            clean = example["clean"] if has_clean else np.zeros((1, 1, 3), np.uint8)
            yield (
                example["name"],
                {
                    "noisy": example["noisy"],
                    "clean": clean,
                    "has_clean": has_clean,
                    "name": example["name"],
                },
            )


def prepare_folder(
    noisy_dir: str,
    clean_dir: str = "",
    data_dir: str | None = None,
    max_pixels: int | None = None,
    wait_s: float = DEFAULT_WAIT_S,
) -> Prepared:
    """Prepare `noisy_image_folder` for these folders once (process 0 of a run;
    `prepare.prepare_once`).

    Args:
      noisy_dir, clean_dir: the folders ("" clean_dir: no references).
      data_dir: TFDS data directory; None for the TFDS default.
      max_pixels: the photo reader's pixel limit (None: its default).
      wait_s: how long processes other than 0 wait for process 0.
    Returns:
      what happened, with the builder ready to read.
    """
    config = folder_config(noisy_dir, clean_dir, max_pixels)
    prepared = prepare_once(
        "noisy_image_folder",
        lambda: NoisyImageFolder(config=config, data_dir=data_dir),
        wait_s=wait_s,
    )
    if prepared.action == "prepared" and f"f{_fingerprint(noisy_dir, clean_dir)}" != config.name:
        # A photo changed while it was read: the dataset would be kept under the old content's
        # name and reused, stale, once the folder is back to that content.
        epath.Path(prepared.builder.data_dir).rmtree()
        raise ConfigError(
            f"dataset.noisy_dir: the photos of {noisy_dir}"
            + (f" or {clean_dir}" if clean_dir else "")
            + " changed while the dataset was prepared; run again once they stay as they are"
        )
    return prepared


def load_folder(
    noisy_dir: str,
    clean_dir: str = "",
    data_dir: str | None = None,
    max_pixels: int | None = None,
    wait_s: float = DEFAULT_WAIT_S,
) -> list[dict[str, Any]]:
    """Prepare (once per folder content) and read `noisy_image_folder`.

    Args:
      noisy_dir, clean_dir: the folders ("" clean_dir: no references).
      data_dir: TFDS data directory; None for the TFDS default.
      max_pixels: the photo reader's pixel limit for preparing (None: its default).
      wait_s: how long processes other than 0 wait for process 0.
    Returns:
      dicts with noisy, clean ((H, W, 3) uint8; clean None without a reference) and name,
      sorted by name.
    """
    builder = prepare_folder(noisy_dir, clean_dir, data_dir, max_pixels, wait_s).builder
    examples = [
        {
            "noisy": e["noisy"],
            "clean": e["clean"] if e["has_clean"] else None,
            "name": e["name"].decode("utf-8"),
        }
        for e in tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))
    ]
    return sorted(examples, key=lambda e: e["name"])
