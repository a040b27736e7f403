"""The command line over a user's mistakes: one line `error: ...`, exit code 2, nothing written.

A table of commands that fail before any training or denoising (no network is compiled):
hostile or damaged photos, FIFOs and link loops, folders that cannot make a dataset, unbounded
settings, missing benchmark files, workdirs that cannot hold a run. Each runs `launch.py` in its
own process (forked from a warm one: tests/launcher.py), bounded in time and memory, and must
print exactly one line on stderr (log lines aside), no traceback, and leave no output, workdir
or dataset behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_denoise import _unet_state_dict, write_torch_zip

SECONDS = 120  # one command; they take 2-10 s
MAX_RSS = 3 * 2**30  # bytes: peak memory of any command (a 9000x9000 decode would pass it)
# stderr lines that are logs, not the error: ours (HH:MM:SS module] ...), TensorFlow's C++
# logs (I0000 00:00:... file.cc:123] ...) and the line absl prints before its own init.
LOG_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d (\w+ )?\w+\] |[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before)"
)


@dataclass(frozen=True)
class Case:
    """One command: its arguments ({d}: the inputs' folder), the start of its error line,
    and the paths (under {d}) that must not exist afterwards."""

    args: tuple[str, ...]
    message: str
    absent: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


DENOISE = ("--mode=denoise", "--checkpoint={d}/unet.pth")
PREPARE = ("--mode=prepare", "--config=configs/own_photos.py", "--config.dataset.data_dir={d}/tfds")
TINY = tuple(f"--config.stages.{stage}.steps=2" for stage in ("bnn", "lan", "unet"))
CASES = {
    "FIFO named like a photo": Case(
        (*DENOISE, "--input={d}/fifo.png", "--output={d}/out_fifo.png"),
        "{d}/fifo.png: a FIFO, not a photo file",
        ("out_fifo.png",),
    ),
    "link loop": Case(
        (*DENOISE, "--input={d}/loop1", "--output={d}/out_loop.png"),
        "{d}/loop1: a loop of symbolic links",
    ),
    "JPEG header 512x512, scan 16x16": Case(
        (*DENOISE, "--input={d}/lie512.jpg", "--output={d}/out_lie512.png"),
        "{d}/lie512.jpg: its scan data",
        ("out_lie512.png",),
    ),
    "JPEG header 9000x9000 in 630 bytes": Case(
        (*DENOISE, "--input={d}/lie9000.jpg", "--output={d}/out_lie9000.png"),
        "{d}/lie9000.jpg: its scan data (4 bytes) cannot code the 9000x9000 pixels",
        ("out_lie9000.png",),
    ),
    "animated PNG": Case(
        (*DENOISE, "--input={d}/anim.png", "--output={d}/out_anim.png"),
        "{d}/anim.png: animated PNG with 3 frames",
        ("out_anim.png",),
    ),
    "multi-page TIFF": Case(
        (*DENOISE, "--input={d}/pages.tif", "--output={d}/out_pages.tif"),
        "{d}/pages.tif: multi-page TIFF with 3 pages",
        ("out_pages.tif",),
    ),
    "colour_sigma inf": Case(
        (*DENOISE, "--input={d}/ok.png", "--output={d}/out_inf.png", "--colour_sigma=inf"),
        "--colour_sigma must be a finite number of pixels, got inf",
        ("out_inf.png",),
    ),
    "colour_sigma nan": Case(
        (*DENOISE, "--input={d}/ok.png", "--output={d}/out_nan.png", "--colour_sigma=nan"),
        "--colour_sigma must be a finite number of pixels, got nan",
        ("out_nan.png",),
    ),
    "colour_sigma 1e9": Case(
        (*DENOISE, "--input={d}/ok.png", "--output={d}/out_big.png", "--colour_sigma=1e9"),
        "--colour_sigma must be between 0 (off) and 256 pixels",
        ("out_big.png",),
    ),
    "colour_sigma wider than the photo": Case(
        (*DENOISE, "--input={d}/ok.png", "--output={d}/out_wide.png", "--colour_sigma=100"),
        "{d}/ok.png: colour sigma 100 is larger than the image's longer side (64 px)",
        ("out_wide.png",),
    ),
    ".npz given as .pth": Case(
        ("--mode=denoise", "--checkpoint={d}/w.npz", "--input={d}/ok.png", "--output={d}/o.png"),
        "{d}/w.npz: a NumPy .npz archive, not a PyTorch .pth",
        ("o.png",),
    ),
    "two photos of one stem": Case(
        (*PREPARE, "--config.dataset.noisy_dir={d}/stems"),
        "dataset.noisy_dir: {d}/stems/a.jpg and a.png have the same name without suffix",
        ("tfds",),
    ),
    "clean_dir lacks a name": Case(
        (*PREPARE, "--config.dataset.noisy_dir={d}/noisy", "--config.dataset.clean_dir={d}/clean"),
        "dataset.clean_dir: no clean reference named b.png in {d}/clean",
        ("tfds",),
    ),
    "file name not UTF-8": Case(
        (*PREPARE, "--config.dataset.noisy_dir={d}/latin1"),
        "b'{d}/latin1'/b'\\xe9.png': file name is not valid UTF-8",
        ("tfds",),
    ),
    "eval: SIDD manual_dir missing": Case(
        ("--mode=eval", "--config=configs/sidd_validation.py", "--checkpoint={d}/unet.pth")
        + ("--output={d}/o_sidd", "--config.dataset.manual_dir={d}/nope")
        + ("--config.dataset.data_dir={d}/tfds",),
        "dataset.manual_dir {d}/nope does not exist: dataset 'sidd_validation_srgb'",
        ("o_sidd",),
    ),
    "submit: DND manual_dir empty": Case(
        ("--mode=submit", "--config=configs/dnd.py", "--checkpoint={d}/unet.pth")
        + ("--output={d}/o_dnd", "--config.dataset.manual_dir={d}/empty")
        + ("--config.dataset.data_dir={d}/tfds",),
        "dataset.manual_dir {d}/empty is empty: dataset 'dnd_srgb'",
        ("o_dnd",),
    ),
    "submit: SIDD benchmark manual_dir empty": Case(
        ("--mode=submit", "--config=configs/sidd_benchmark.py", "--checkpoint={d}/unet.pth")
        + ("--output={d}/o_sb", "--config.dataset.manual_dir={d}/empty")
        + ("--config.dataset.data_dir={d}/tfds",),
        "dataset.manual_dir {d}/empty is empty: dataset 'sidd_benchmark_srgb'",
        ("o_sb",),
    ),
    "eval: postprocess.colour_sigma 1e5": Case(
        ("--mode=eval", "--checkpoint={d}/unet.pth", "--output={d}/o_ev")
        + ("--config.dataset.name=image_folder", "--config.dataset.noisy_dir={d}/noisy")
        + ("--config.dataset.clean_dir={d}/noisy", "--config.postprocess.colour_sigma=1e5"),
        "postprocess.colour_sigma must be between 0 (off) and 256 pixels",
        ("o_ev",),
    ),
    "analyze: a flat photo": Case(
        ("--mode=analyze", "--input={d}/flat.png", "--output={d}/o_an"),
        "noise analysis: no noise measurable",
        ("o_an",),
    ),
    "workdir gs:// without a bucket": Case(
        ("--workdir=gs://", *TINY), "--workdir gs://: no bucket name"
    ),
    "workdir gs:///x": Case(("--workdir=gs:///x", *TINY), "--workdir gs:///x: no bucket name"),
    "workdir s3://": Case(("--workdir=s3://x", *TINY), "--workdir s3://x: s3:// URLs are not"),
    "workdir file://": Case(
        ("--workdir=file:///data/x", *TINY), "--workdir file:///data/x: file:// URLs are not"
    ),
    "workdir http://": Case(
        ("--workdir=http://h/x", *TINY), "--workdir http://h/x: http:// URLs are not"
    ),
    "workdir an existing file": Case(
        ("--workdir={d}/ok.png", *TINY), "--workdir {d}/ok.png: is a file, not a folder"
    ),
    "seed 2**64": Case(
        ("--workdir={d}/w", *TINY, "--config.seed=18446744073709551616"),
        "seed must be an integer from 0 to 4294967295",
        ("w",),
    ),
    "batch_size 3 on 2 devices": Case(
        ("--workdir={d}/w", *TINY, "--config.batch_size=3"),
        "batch_size: the global batch 3 does not divide over 2 devices",
        ("w",),
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    ),
    "failed pre-flight leaves no workdir": Case(
        ("--workdir={d}/w", "--config=configs/own_photos.py", "--config.dataset.noisy_dir={d}/no")
        + TINY,
        "dataset.noisy_dir: '{d}/no' is not a directory",
        ("w",),
    ),
}


def _save(path: Path, image: np.ndarray, **kwargs) -> None:
    Image.fromarray(image).save(path, **kwargs)


def _set_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[i + 9 :]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The inputs of every case, in one folder."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)

    def noise(size: int = 64) -> np.ndarray:
        return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    with pytest.MonkeyPatch.context() as mp:
        write_torch_zip(d / "unet.pth", _unet_state_dict(width=4), mp)
    np.savez(d / "w.npz", a=np.zeros(3))
    _save(d / "ok.png", noise())
    _save(d / "flat.png", np.full((96, 96, 3), 100, np.uint8))
    os.mkfifo(d / "fifo.png")
    os.symlink("loop2", d / "loop1")
    os.symlink("loop1", d / "loop2")
    _save(d / "small.jpg", noise(16), quality=95)
    small = (d / "small.jpg").read_bytes()
    (d / "lie512.jpg").write_bytes(_set_jpeg_size(small, 512, 512))
    _save(d / "grey.jpg", np.full((16, 16, 3), 128, np.uint8))
    (d / "lie9000.jpg").write_bytes(_set_jpeg_size((d / "grey.jpg").read_bytes(), 9000, 9000))
    frames = [Image.fromarray(noise()) for _ in range(3)]
    frames[0].save(d / "anim.png", save_all=True, append_images=frames[1:])
    import tifffile

    tifffile.imwrite(d / "pages.tif", np.stack([noise() for _ in range(3)]), photometric="rgb")
    for folder, names in {"stems": ("a.png", "a.jpg"), "noisy": ("a.png", "b.png")}.items():
        (d / folder).mkdir()
        for name in names:
            _save(d / folder / name, noise(96))
    (d / "clean").mkdir()
    _save(d / "clean" / "a.png", noise(96))
    (d / "latin1").mkdir()
    _save(d / "latin1" / "ok.png", noise(96))
    _save(os.path.join(os.fsencode(d / "latin1"), b"\xe9.png"), noise(96))
    (d / "empty").mkdir()
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_line_exit_2_and_writes_nothing(launch, inputs, name):
    case, d = CASES[name], str(inputs)
    args = [a.format(d=d) for a in case.args]
    env = {**launch.env, **case.env}
    run = launch(*args, env=env, timeout=SECONDS)
    lines = [x for x in run.stderr.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: " + case.message.format(d=d)), lines
    for path in case.absent:
        assert not (inputs / path).exists(), path
    assert run.peak_bytes < MAX_RSS, run.peak_bytes


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written in: a read-only tmpfs where mounting is allowed (root
    in a container), else a folder without write permission (not for root); else skipped."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode == 0:
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere and cannot mount a read-only file system here")
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("mode", ["workdir", "data_dir", "analyze", "denoise"])
def test_unwritable_folders_are_one_line_before_any_work(launch, inputs, read_only_dir, mode):
    d, ro = str(inputs), str(read_only_dir)
    args = {
        "workdir": ["--workdir=" + ro + "/w", *TINY],
        "data_dir": [*PREPARE[:2], f"--config.dataset.data_dir={ro}/d"]
        + [f"--config.dataset.noisy_dir={d}/noisy"],
        "analyze": ["--mode=analyze", f"--input={d}/ok.png", f"--output={ro}/a"],
        "denoise": [*DENOISE, f"--input={d}/ok.png", f"--output={ro}/o.png"],
    }[mode]
    run = launch(*(a.format(d=d) for a in args), timeout=SECONDS)
    lines = [x for x in run.stderr.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and ro in lines[0], lines
    assert not os.listdir(read_only_dir)
