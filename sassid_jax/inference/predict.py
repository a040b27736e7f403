"""Inference on images of any size: whole-image, tiled (seam-free) and x8 self-ensemble.

Images are (H, W, 3) on the [0, 255] scale (uint8 or float); outputs are float32 (H, W, 3) on
the same scale, not yet rounded (`evaluation.metrics.quantize` rounds). `denoise` gives
`predict_image`'s result tile by tile, with memory bounded by the tile, not by the image.
Details: docs/inference.md#tiling.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sassid_jax.inference.colour_anchor import anchor_image
from sassid_jax.nn.trunk import SIZE_MULTIPLE

ApplyFn = Callable[[jax.Array], jax.Array]
BatchFn = Callable[[np.ndarray], Any]  # (N, H, W, 3) float32 -> (N, H, W, 3), array-like
ImageFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]

MIN_SIZE = 8  # smallest height/width accepted by `denoise`
# Context kept beside each cut: 128 makes tiled equal to whole-image inference for any weights
# (docs/inference.md#exactness-margin).
DEFAULT_MARGIN = 128
DEFAULT_TILE = 1024  # repeated work against memory (docs/inference.md#exactness-margin)
DEFAULT_BATCH = 1


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Reflect-pad an image at the bottom and right up to multiples of `multiple`.

    Args:
      image: (H, W, C), any dtype.
      multiple: the size multiple (32: the U-Net's pooling grid).
    Returns:
      (ceil(H / multiple) * multiple, ceil(W / multiple) * multiple, C), image's dtype;
      symmetric padding (edge repeated) where a pad is not smaller than the image.
    """
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    # reflect needs pad < size; tiny images repeat (symmetric) instead
    mode = "symmetric" if ph >= h or pw >= w else "reflect"
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


def predict_image(apply_fn: ApplyFn, image: np.ndarray) -> np.ndarray:
    """`apply_fn` on one whole image of any size (padded to multiples of 32, cropped back).

    Args:
      apply_fn: (1, H', W', 3) float32 -> (1, H', W', 3), H' and W' multiples of 32.
      image: (H, W, 3), uint8 or float on [0, 255].
    Returns:
      (H, W, 3) float32 on [0, 255], not rounded.
    """
    h, w = image.shape[:2]
    padded = pad_to_multiple(np.asarray(image, dtype=np.float32))
    out = apply_fn(jnp.asarray(padded[None]))
    return np.asarray(out[0, :h, :w], dtype=np.float32)


def predict_blocks(apply_fn: ApplyFn, image: np.ndarray, block: int, batch: int = 16) -> np.ndarray:
    """`apply_fn` on non-overlapping block x block pieces, each seen alone (no context).

    This is how a network trained on block x block crops sees its inputs during training
    (the BNN is only ever applied to training crops); blocks meet at visible seams.

    Args:
      apply_fn: (n, block, block, 3) float32 -> same shape, n <= batch.
      image: (H, W, 3), uint8 or float on [0, 255].
      block: block side, a multiple of 32.
      batch: blocks per apply_fn call.
    Returns:
      (H, W, 3) float32 on [0, 255].
    """
    h, w = image.shape[:2]
    padded = pad_to_multiple(np.asarray(image, dtype=np.float32), block)
    ph, pw = padded.shape[0] // block, padded.shape[1] // block
    blocks = padded.reshape(ph, block, pw, block, 3).transpose(0, 2, 1, 3, 4)
    blocks = blocks.reshape(ph * pw, block, block, 3)
    outs = [
        np.asarray(apply_fn(jnp.asarray(blocks[i : i + batch])))
        for i in range(0, len(blocks), batch)
    ]
    out = np.concatenate(outs).reshape(ph, pw, block, block, 3).transpose(0, 2, 1, 3, 4)
    return out.reshape(ph * block, pw * block, 3)[:h, :w].astype(np.float32)


def jit_apply(module: nn.Module, params: Any) -> ApplyFn:
    """`module` with `params` bound, jitted.

    The parameters are passed as arguments (not baked into the program as constants), so
    one compilation serves every call with the same input shape.

    Args:
      module: a network (its `apply` maps (N, H, W, 3) float32 on [0, 255] to the same).
      params: its parameters (the "params" collection).
    Returns:
      A function (N, H, W, 3) -> (N, H, W, 3) jax.Array.
    """
    apply = jax.jit(module.apply)
    return lambda x: apply({"params": params}, x)


# ----------------------------------------------------------------------------- tiling plan


@dataclass(frozen=True)
class AxisSpan:
    """One window along an axis: input window [start, start + size) of the padded image, of
    which output rows/columns [keep_lo, keep_hi) (absolute coordinates) are kept."""

    start: int
    keep_lo: int
    keep_hi: int


@dataclass(frozen=True)
class TilePlan:
    """Where the windows of one padded image lie.

    Attributes:
      padded_shape: (Hp, Wp), the image reflect-padded to multiples of `multiple`.
      tile_shape: (th, tw), the shape of every window (<= tile, multiples of `multiple`).
      rows, cols: windows along each axis; the tiles are their product (row-major).
    """

    padded_shape: tuple[int, int]
    tile_shape: tuple[int, int]
    rows: tuple[AxisSpan, ...]
    cols: tuple[AxisSpan, ...]

    @property
    def num_tiles(self) -> int:
        """How many windows the image has."""
        return len(self.rows) * len(self.cols)

    def tiles(self) -> Iterator[tuple[AxisSpan, AxisSpan]]:
        """(row span, column span) of every tile, row-major."""
        for r in self.rows:
            for c in self.cols:
                yield r, c


def axis_spans(
    size: int, tile: int, margin: int, multiple: int = SIZE_MULTIPLE
) -> tuple[AxisSpan, ...]:
    """Windows of length min(tile, size) covering [0, size), starts multiples of `multiple`.

    Neighbouring windows overlap by >= 2 * margin and are cut in the middle of the overlap,
    so every kept pixel has >= margin pixels of context towards any cut.

    Args:
      size: the padded length of the axis in pixels, a multiple of `multiple`.
      tile: the window length, a multiple of `multiple`; tile - 2 * margin >= multiple when
        size > tile.
      margin: the least context beside a cut, in pixels.
      multiple: the network's size multiple.
    Returns:
      The windows in order; one when size <= tile.
    Raises:
      ValueError: size or tile not a multiple of `multiple`, or tile too small for margin.
    """
    if size % multiple or tile % multiple:
        raise ValueError(f"size {size} and tile {tile} must be multiples of {multiple}")
    if size <= tile:
        return (AxisSpan(0, 0, size),)
    blocks, tile_blocks = size // multiple, tile // multiple
    max_step = (tile - 2 * margin) // multiple  # in blocks
    if max_step < 1:
        raise ValueError(
            f"tile {tile} is too small for margin {margin}: need tile >= 2 * margin + {multiple}"
        )
    n = 1 + math.ceil((blocks - tile_blocks) / max_step)
    # floor(i * q) with q <= max_step: consecutive starts differ by <= max_step blocks
    starts = [(i * (blocks - tile_blocks)) // (n - 1) * multiple for i in range(n)]
    middles = [(s + prev + tile) // 2 for prev, s in zip(starts[:-1], starts[1:], strict=True)]
    cuts = [0, *middles, size]
    return tuple(AxisSpan(s, lo, hi) for s, lo, hi in zip(starts, cuts[:-1], cuts[1:], strict=True))


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int = DEFAULT_TILE,
    margin: int = DEFAULT_MARGIN,
    multiple: int = SIZE_MULTIPLE,
) -> TilePlan:
    """The tiling of a height x width image (`axis_spans` on each axis of the padded size).

    Args:
      height, width: the image's size in pixels.
      tile, margin, multiple: as in `axis_spans`.
    Returns:
      The `TilePlan`.
    Raises:
      ValueError: tile is not a positive multiple of `multiple`, or too small for margin.
    """
    if tile % multiple or tile <= 0:
        raise ValueError(f"tile must be a positive multiple of {multiple}, got {tile}")
    hp, wp = height + (-height % multiple), width + (-width % multiple)
    rows = axis_spans(hp, tile, margin, multiple)
    cols = axis_spans(wp, tile, margin, multiple)
    return TilePlan((hp, wp), (min(tile, hp), min(tile, wp)), rows, cols)


# ----------------------------------------------------------------------------- tiled run


def check_image(image: np.ndarray, min_size: int = MIN_SIZE) -> None:
    """Raise ValueError unless `image` (an array) is (H, W, 3) with H, W >= `min_size` pixels."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    h, w = image.shape[:2]
    if h < min_size or w < min_size:
        raise ValueError(
            f"image of {w}x{h} pixels is too small to denoise: need at least {min_size}x{min_size}"
        )


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def denoise(
    apply_fn: ApplyFn,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    margin: int = DEFAULT_MARGIN,
    batch: int = DEFAULT_BATCH,
    multiple: int = SIZE_MULTIPLE,
    progress: Progress | None = None,
) -> np.ndarray:
    """Run apply_fn on an image of any size, tile by tile; equals `predict_image` up to the
    finite-margin error (exactly, when the padded image fits in one tile) for a network of
    finite field, not for one with global attention (TBSN: docs/peers.md#tiling).

    Args:
      apply_fn: (N, th, tw, 3) -> (N, th, tw, 3) float, on the [0, 255] scale; best jitted
        (see `jit_apply`): every call gets the same shape (th, tw) = plan.tile_shape, N = batch
        (the last batch is filled up with copies), so it compiles once per image shape class.
      image: (H, W, 3), uint8 or float on [0, 255]; H, W >= 8.
      tile: window side, a multiple of `multiple` (smaller images use one smaller window).
      margin: minimum context beside each cut between windows (pixels).
      batch: windows per apply_fn call.
      multiple: the network's size multiple (32 for the U-Net: five 2x2 poolings).
      progress: called as progress(tiles_done, tiles_total) after each batch.
    Returns:
      (H, W, 3) float32 on the [0, 255] scale.
    """
    image = np.asarray(image)
    check_image(image)
    h, w = image.shape[:2]
    plan = plan_tiles(h, w, tile=tile, margin=margin, multiple=multiple)
    padded = pad_to_multiple(np.asarray(image, dtype=np.float32), multiple)
    out = np.empty(padded.shape, np.float32)
    th, tw = plan.tile_shape
    tiles = list(plan.tiles())
    done = 0
    for group in _batches(tiles, max(1, batch)):
        stack = np.stack([padded[r.start : r.start + th, c.start : c.start + tw] for r, c in group])
        if len(group) < batch:  # keep one shape: fill the batch with copies of the last tile
            stack = np.concatenate([stack, np.repeat(stack[-1:], batch - len(group), 0)])
        result = np.asarray(apply_fn(jnp.asarray(stack)), dtype=np.float32)
        for k, (r, c) in enumerate(group):
            out[r.keep_lo : r.keep_hi, c.keep_lo : c.keep_hi] = result[
                k,
                r.keep_lo - r.start : r.keep_hi - r.start,
                c.keep_lo - c.start : c.keep_hi - c.start,
            ]
        done += len(group)
        if progress is not None:
            progress(done, len(tiles))
    return out[:h, :w]


# ----------------------------------------------------------------------------- ensemble


def dihedral(image: np.ndarray, index: int) -> np.ndarray:
    """Element `index` of the dihedral group applied to an image.

    Args:
      image: (..., H, W, C); leading axes (e.g. a batch) are left alone.
      index: 0..7: a left-right flip when index >= 4, then rot90 over (H, W) index % 4 times.
    Returns:
      A view of `image`, (..., W, H, C) for odd index, else (..., H, W, C).
    """
    if index >= 4:
        image = np.flip(image, axis=-2)
    return np.rot90(image, index % 4, axes=(-3, -2))


def inverse_dihedral(image: np.ndarray, index: int) -> np.ndarray:
    """Undo `dihedral(., index)`: the arguments and result as in `dihedral`."""
    image = np.rot90(image, -(index % 4), axes=(-3, -2))
    return np.flip(image, axis=-2) if index >= 4 else image


def self_ensemble(fn: ImageFn, image: np.ndarray) -> np.ndarray:
    """x8 self-ensemble: mean over the 8 flips x rotations of inverse(fn(transform(image))).

    Args:
      fn: maps a transformed image (H and W possibly swapped) to an output of its shape.
      image: (H, W, 3), or a batch (N, H, W, 3), on [0, 255].
    Returns:
      float32, the shape of `image` (the mean is taken in float64).
    """
    total = np.zeros(np.shape(image), np.float64)
    for index in range(8):
        y = fn(np.ascontiguousarray(dihedral(image, index)))
        total += inverse_dihedral(np.asarray(y, np.float32), index)
    return (total / 8).astype(np.float32)


def denoise_ensemble(
    apply_fn: ApplyFn, image: np.ndarray, *, progress: Progress | None = None, **kwargs: Any
) -> np.ndarray:
    """`denoise` with the x8 self-ensemble.

    Args:
      apply_fn, image: as in `denoise`.
      progress: called as progress(tiles_done, tiles_total), counting the tiles of all
        eight passes.
      **kwargs: tile, margin, batch, multiple of `denoise`.
    Returns:
      (H, W, 3) float32 on [0, 255].
    """
    image = np.asarray(image)
    check_image(image)
    h, w = image.shape[:2]
    keys = {k: kwargs[k] for k in ("tile", "margin", "multiple") if k in kwargs}
    per_pass = [plan_tiles(*((h, w) if i % 2 == 0 else (w, h)), **keys).num_tiles for i in range(8)]
    offsets = np.cumsum([0, *per_pass])
    state = {"pass": 0}

    def one(x: np.ndarray) -> np.ndarray:
        base = int(offsets[state["pass"]])
        report = None if progress is None else (lambda d, _t: progress(base + d, int(offsets[-1])))
        state["pass"] += 1
        return denoise(apply_fn, x, progress=report, **kwargs)

    return self_ensemble(one, image)


def denoise_images(
    apply_fn: BatchFn,
    images: Sequence[np.ndarray],
    *,
    ensemble: bool = False,
    batch: int = 8,
    progress: Callable[[int], None] | None = None,
    colour_sigma: float = 0.0,
) -> list[np.ndarray]:
    """Denoise whole images (the eval and submit modes), batching equal shapes.

    Each image is padded (reflect) to a multiple of 32 and cropped back.

    Args:
      apply_fn: (N, H', W', 3) float32 -> (N, H', W', 3) array-like, H', W' multiples of 32.
      images: (H, W, 3) images on [0, 255], uint8 or float; sizes may differ.
      ensemble: the mean over the 8 flips x rotations, each undone.
      batch: most images per apply_fn call.
      progress: called as progress(n) after each batch with the number of images it
        finished (each image counted once).
      colour_sigma: > 0 gives each output its input's local mean colour (`colour_anchor`).
    Returns:
      (H, W, 3) float32 outputs on [0, 255], in input order, not rounded.
    """

    def run(stack: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> (N, H, W, 3) float32
        padded = np.stack([pad_to_multiple(x) for x in stack])
        return np.asarray(apply_fn(padded), np.float32)[:, : stack.shape[1], : stack.shape[2]]

    groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
    for i, image in enumerate(images):
        groups[np.shape(image)].append(i)
    outputs: list[np.ndarray | None] = [None] * len(images)
    for members in groups.values():
        for start in range(0, len(members), batch):
            chunk = members[start : start + batch]
            stack = np.stack([np.asarray(images[i], np.float32) for i in chunk])
            result = self_ensemble(run, stack) if ensemble else run(stack)
            for k, i in enumerate(chunk):
                outputs[i] = anchor_image(result[k], stack[k], colour_sigma)
            if progress is not None:
                progress(len(chunk))
    return outputs  # type: ignore[return-value]


def denoise_image(
    module: nn.Module,
    params: Any,
    image: np.ndarray,
    *,
    colour_sigma: float = 0.0,
    ensemble: bool = False,
    tile: int = DEFAULT_TILE,
    progress: Progress | None = None,
) -> np.ndarray:
    """Denoise one photo with a trained network, tile by tile (the `--mode denoise` path).

    Args:
      module, params: a network and its parameters, e.g. from `io.checkpoints.load_network`.
      image: (H, W, 3) RGB, uint8 or float on [0, 255]; H, W >= 8.
      colour_sigma: > 0 keeps the input's local mean colour (`colour_anchor`, 8 in the
        default recipe; 0 = the network's raw output, as the authors').
      ensemble: average the x8 flips and rotations.
      tile: tile side (a multiple of 32, at least 288), bounding memory on large photos.
      progress: called as progress(tiles_done, tiles_total).
    Returns:
      (H, W, 3) float32 on [0, 255], not rounded (`evaluation.metrics.quantize` rounds).
    """
    image = np.asarray(image)
    check_image(image)
    run = denoise_ensemble if ensemble else denoise
    out = run(jit_apply(module, params), image, tile=tile, progress=progress)
    return anchor_image(out, image, colour_sigma)
