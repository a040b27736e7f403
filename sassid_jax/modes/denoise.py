"""`--mode denoise`: a trained network (U-Net, LAN or BNN) on photos, files or folders.

`run_denoise` reads each photo (`io.photos`: PNG, JPEG, TIFF, 8 or 16 bit, alpha and EXIF
kept), denoises it tile by tile (`inference.predict`), anchors its colour, estimates its gain
from the noisy photo alone (`inference.safeguard`), writes it atomically beside the others and
returns an exit code; every bad input is one line naming the file. Paths may be bucket URLs.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from etils import epath
from tqdm import tqdm

from sassid_jax.errors import ConfigError, UserInputError
from sassid_jax.inference import predict, procedure
from sassid_jax.inference.colour_anchor import (
    anchor_image,
    check_sigma,
    check_sigma_fits,
    config_sigma,
)
from sassid_jax.inference.predict import DEFAULT_MARGIN, MIN_SIZE
from sassid_jax.inference.safeguard import config_mode, photo_check
from sassid_jax.io.checkpoints import CheckpointInputError, load_network_or_hint, run_config_of
from sassid_jax.io.paths import check_writable_folder, is_local, same_path
from sassid_jax.io.photos import (
    Photo,
    check_output_suffix,
    check_writable,
    not_regular,
    photo_files,
    read_photo,
    write_photo,
)

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


class DenoiseInputError(UserInputError):
    """Bad input (image, path or checkpoint); str() is one line naming the file."""


# ============================================================================ checkpoints


def load_denoiser(
    checkpoint: str | os.PathLike,
    network: str = "unet",
    arch: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """(module, params) of `network` ('unet', 'lan' or 'bnn') from a run folder (the last stage
    training it), a folder inside its checkpoints/, or an authors' `.pth` holding `arch`
    (None: the role's own) with `attributes` its tensors do not tell (input_scale).

    Raises DenoiseInputError, one line naming the path and, when the checkpoint holds other
    networks but not this one, the `--network` that runs them.
    """
    try:
        return load_network_or_hint(checkpoint, network, "--network ", arch, attributes)
    except CheckpointInputError as e:
        raise DenoiseInputError(str(e)) from e


def denoiser_settings(checkpoint: str | os.PathLike) -> tuple[float, str]:
    """(postprocess.colour_sigma, postprocess.safeguard) of the run that holds `checkpoint`;
    (0, "off") for a .pth or a run from before the fields existed."""
    config = run_config_of(checkpoint) or {}
    try:
        return config_sigma(config), config_mode(config)
    except ConfigError as e:
        raise DenoiseInputError(f"{checkpoint}: {e}") from e


# ============================================================================ the command


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: epath.Path
    target: epath.Path


def plan_jobs(input_path: str | os.PathLike, output_path: str | os.PathLike) -> list[Job]:
    """The jobs of a file -> file, file -> folder or folder -> folder run (a folder's photos at
    its top level, names kept), in name order. DenoiseInputError for missing or empty inputs
    and for outputs that would overwrite their inputs."""
    source, target = epath.Path(input_path), epath.Path(output_path)
    if not source.exists():
        what = not_regular(source) if is_local(source) else None
        raise DenoiseInputError(f"{source}: {what or 'no such file or directory'}")
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise DenoiseInputError(
                f"{target}: the input is a folder, so the output must be a folder too"
            )
        if same_path(source, target):
            raise DenoiseInputError(
                f"{target}: output folder is the input folder; the results "
                "would overwrite the inputs"
            )
        files = photo_files(source)
        if not files:
            raise DenoiseInputError(f"{source}: no PNG, JPEG or TIFF images in this folder")
        return [Job(p, target / p.name) for p in files]
    what = not_regular(source)
    if what is not None:
        raise DenoiseInputError(f"{source}: {what}, not a photo file")
    if target.is_dir():
        target = target / source.name
    if same_path(source, target):
        raise DenoiseInputError(f"{target}: output would overwrite the input")
    check_output_suffix(target)
    if is_local(target) and not target.parent.is_dir():  # a bucket's folders are implicit
        raise DenoiseInputError(f"{target.parent}: output folder does not exist")
    return [Job(source, target)]


class _Progress:
    """tqdm bars over files and over the tiles of the current file, on stderr; hidden when
    stderr is not a terminal (a log file gets the one line per photo only)."""

    def __init__(self, total_files: int) -> None:
        self._files = tqdm(total=total_files, unit="file", file=sys.stderr, disable=None)
        self._tiles: Any = None

    def message(self, text: str, *, error: bool = False) -> None:
        tqdm.write(text, file=sys.stderr if error else sys.stdout)

    def tiles(self, done: int, total: int) -> None:
        if self._tiles is None:
            self._tiles = tqdm(total=total, unit="tile", leave=False, file=sys.stderr, disable=None)
        self._tiles.update(done - self._tiles.n)

    def file_done(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
            self._tiles = None
        self._files.update(1)

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        self._files.close()


def denoise_photo(
    apply_fn: Any,
    photo: Photo,
    *,
    ensemble: bool,
    tile: int,
    progress: Callable[[int, int], None] | None,
    colour_sigma: float = 0.0,
    check: Callable[[Any, Any], Any] | None = None,
) -> Photo:
    """The denoised photo: same size, bit depth and channels, alpha unchanged.

    Args:
      apply_fn: the network, (N, H, W, 3) float32 on [0, 255] -> the same (`jit_apply`).
      photo: the noisy photo (`io.photos.Photo`).
      ensemble: average the x8 flips and rotations.
      tile: tile side in pixels (`inference.predict.denoise`).
      progress: called as progress(tiles_done, tiles_total), or None.
      colour_sigma: > 0 keeps the input's local mean colour (`inference.colour_anchor`).
      check: check(rgb, output) -> output applied last (the safeguard, `photo_check`), or None;
        rgb and output are (H, W, 3) float on [0, 255].
    """
    run = predict.denoise_ensemble if ensemble else predict.denoise
    rgb = photo.rgb()
    out = anchor_image(run(apply_fn, rgb, tile=tile, progress=progress), rgb, colour_sigma)
    return photo.with_rgb(out if check is None else check(rgb, out))


def _process(
    job: Job,
    apply_fn: Any,
    bars: _Progress,
    *,
    ensemble: bool,
    tile: int,
    max_pixels: int | None,
    sigma: float,
    check: Callable | None,
) -> None:
    start = time.perf_counter()
    photo = read_photo(job.source, max_pixels)
    h, w = photo.pixels.shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise DenoiseInputError(
            f"{job.source}: image of {w}x{h} pixels is too small to "
            f"denoise (need at least {MIN_SIZE}x{MIN_SIZE})"
        )
    check_writable(photo, job.target)
    too_wide = check_sigma_fits(sigma, h, w)
    if too_wide is not None:
        raise DenoiseInputError(f"{job.source}: {too_wide}; lower --colour_sigma")
    result = denoise_photo(
        apply_fn,
        photo,
        ensemble=ensemble,
        tile=tile,
        progress=bars.tiles,
        colour_sigma=sigma,
        check=None if check is None else functools.partial(check, job.source.name),
    )
    write_photo(job.target, result)
    note = (
        " (JPEG output: 8-bit)"
        if photo.bits == 16 and job.target.suffix.lower() in (".jpg", ".jpeg")
        else ""
    )
    bars.message(
        f"{job.source} -> {job.target} ({w}x{h}, {photo.bits}-bit{note}, "
        f"{time.perf_counter() - start:.1f} s)"
    )


def run_denoise(
    checkpoint: str,
    input_path: str,
    output_path: str,
    *,
    ensemble: bool = False,
    overwrite: bool = False,
    tile: int = 1024,
    max_pixels: int | None = None,
    colour_sigma: float | None = None,
    safeguard: str | None = None,
    network: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Denoise a file or every image of a folder (top level) with one network.

    Args:
      checkpoint: a run folder, a folder inside its checkpoints/, or an authors' `.pth`.
      input_path: a photo, or a folder of photos (PNG, JPEG, TIFF).
      output_path: the output file (its extension picks the format) or folder (names and
        extensions kept; created if missing).
      ensemble: average the x8 flips and rotations.
      overwrite: redo outputs that exist (else they are skipped).
      tile: tile side in pixels, a multiple of 32 and at least 288.
      max_pixels: the largest width x height read, checked before decoding (None: the
        default of `io.photos`).
      colour_sigma: the colour anchor's blur in pixels (`inference.colour_anchor`, 0 = off);
        None: the run's postprocess.colour_sigma (0 for a `.pth`: the authors' raw outputs).
      safeguard: "blend" or "off" (`inference.safeguard`): one line per photo with its gain
        estimated from the noisy photo alone, a warning (and with "blend", a blend with the
        input) when it is <= 0 dB; "none": no estimate. None: the run's
        postprocess.safeguard ("off" for a `.pth`).
      network: 'unet', 'lan' or 'bnn' (see `load_denoiser`); None: the config's
        eval.network ('unet' without one).
      config: the method's config (--config): its test-time procedure (config.inference,
        `inference.procedure`), its eval.network and, for a `.pth`, the architecture the
        file holds (networks.<role>.arch). None: the run folder's config.json (a `.pth`:
        the network as it is).
    Returns:
      The exit code: 0 done (or skipped); 2 bad input (one line per problem naming the file;
      in folder mode the other photos are still done); 130 Ctrl-C (no partial file left).
    """
    try:
        smallest = 2 * DEFAULT_MARGIN + 32
        if tile < smallest or tile % 32:
            raise DenoiseInputError(
                f"--tile {tile}: must be a multiple of 32, at least "
                f"{smallest} (two {DEFAULT_MARGIN}-pixel margins + 32)"
            )
        if colour_sigma is not None:
            colour_sigma = check_sigma(colour_sigma, "--colour_sigma")
        if max_pixels is not None and max_pixels <= 0:
            raise DenoiseInputError(f"--max_pixels {max_pixels}: must be a positive pixel count")
        jobs = plan_jobs(input_path, output_path)
        todo = [j for j in jobs if overwrite or not j.target.exists()]
        for job in jobs:
            if job not in todo:
                print(f"skip {job.target}: already exists (use --overwrite to redo it)")
        if not todo:
            return EXIT_OK
        check_writable_folder(todo[0].target.parent, "--output")  # before any photo's work
        run_config = run_config_of(checkpoint) or {}
        method = dict(config if config is not None else run_config)
        if config is not None and run_config.get("inference") not in (
            None,
            dict(method.get("inference") or {}),
        ):
            print(
                f"warning: {checkpoint} was trained with inference {run_config['inference']}; "
                f"running with --config's {dict(method['inference'])}",
                file=sys.stderr,
            )
        network = network or (method.get("eval") or {}).get("network", "unet")
        try:
            proc = procedure.from_config(method, network)
        except ConfigError as e:
            raise DenoiseInputError(str(e)) from e
        arch = procedure.architecture(method, network)
        attributes = procedure.pth_attributes(method, network)  # a .pth's input_scale
        module, params = load_denoiser(checkpoint, network, arch, attributes)
        run_sigma, run_safeguard = denoiser_settings(checkpoint)
        colour_sigma = run_sigma if colour_sigma is None else colour_sigma
        safeguard = run_safeguard if safeguard is None else safeguard
        if safeguard not in ("blend", "off", "none"):
            raise DenoiseInputError(f"--safeguard {safeguard}: must be blend, off or none")
        if not proc.plain:  # the estimate takes the plain network's Jacobian
            if safeguard == "blend":
                raise DenoiseInputError(
                    "--safeguard blend: not with a test-time procedure (inference: blind "
                    "size, PD, R3); use --safeguard none"
                )
            safeguard = "none"
        todo[0].target.parent.mkdir(parents=True, exist_ok=True)  # folder mode: may be new
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # e.g. the output folder cannot be created
        print(f"error: {e.filename or output_path}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if proc.plain:
        apply_fn = predict.jit_apply(module, params)  # looked up here: tests replace it
    else:
        apply_fn = procedure.jit_procedure(module, params, proc)
    bars, failed = _Progress(len(todo)), 0
    check = None
    if safeguard != "none":
        check = photo_check(module, params, colour_sigma, safeguard, bars.message)
    try:
        for job in todo:
            try:
                _process(
                    job,
                    apply_fn,
                    bars,
                    ensemble=ensemble,
                    tile=tile,
                    max_pixels=max_pixels,
                    sigma=colour_sigma,
                    check=check,
                )
            except UserInputError as e:
                failed += 1
                bars.message(f"error: {e}", error=True)
            except OSError as e:  # writing: disk full, permissions, ...
                failed += 1
                bars.message(f"error: {job.target}: cannot write ({e.strerror or e})", error=True)
            bars.file_done()
    except KeyboardInterrupt:
        bars.close()
        print("interrupted: no partial output was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    bars.close()
    return EXIT_BAD_INPUT if failed else EXIT_OK
