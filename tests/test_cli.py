"""The command line (launch.py = the `sassid` console script): help, exit codes, one-line
errors, JAX's flags, and where --config is looked up."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sassid_jax import cli
from sassid_jax.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]


def _sassid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The console script's entry point (`sassid ARGS`), run as the installed script runs it,
    in a process of its own with environment `env`."""
    code = "import sys\nfrom sassid_jax.cli import run\nrun(['sassid', *sys.argv[1:]])\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "error: Unknown command line flag 'bogus'"),
        (["--tile=abc", "--workdir=W"], "error: flag --tile=abc: invalid literal for int()"),
        (
            ["--config=configs/nope.py", "--workdir=W"],
            "error: --config: no config file 'configs/nope.py' (looked in",
        ),
        (
            ["--config.nonexistent=1", "--workdir=W"],
            "error: --config.nonexistent: configs/default.py has no field 'nonexistent'",
        ),
        (
            ["--config", "configs/joint.py", "--config.stages.bnn.lr=1", "--workdir=W"],
            "error: --config.stages.bnn.lr: configs/joint.py has no field 'stages.bnn.lr'",
        ),
        (
            ["--config.stages.bnn.stpes=5", "--workdir=W"],
            "error: --config.stages.bnn.stpes: configs/default.py has no field "
            "'stages.bnn.stpes'; did you mean --config.stages.bnn.steps?",
        ),
        (
            ["--noconfig.eval.ensembel", "--workdir=W"],
            "error: --noconfig.eval.ensembel: configs/default.py has no field "
            "'eval.ensembel'; did you mean --noconfig.eval.ensemble?",
        ),
        (
            ["--config.stages.bnn.lr=inf", "--workdir=W"],
            "error: stages.bnn.lr must be a finite number, got inf",
        ),
        (
            ["--config.stages.lan.lr=x", "--workdir=W"],
            "error: flag --config.stages.lan.lr=x: could not convert",
        ),
        ([], "error: --mode train needs --workdir"),
        (["--workdir=W", "extra"], "error: unexpected arguments: ['extra']"),
        (
            ["--mode=eval", "--config=configs/sidd_validation.py", "--checkpoint=C", "--output=W"]
            + ["--config.eval.network=cnn"],
            "error: eval.network must be one of ('bnn', 'lan', 'unet'), got 'cnn'",
        ),
        (
            ["--mode=eval", "--config=configs/dnd.py", "--checkpoint=C", "--output=W"],
            "error: dataset: 'dnd_srgb' cannot be evaluated here",
        ),
        (
            ["--mode=submit", "--config=configs/dnd.py", "--checkpoint=C", "--output=W"]
            + ["--config.eval.batch=0"],
            "error: eval.batch must be a positive integer, got 0",
        ),
        (["--mode=prepare", "--config.dataset.name=nope"], "error: dataset.name: unknown dataset"),
        (
            ["--mode=prepare", "--config.dataset.prepare_timeout=-1"],
            "error: dataset.prepare_timeout must be a positive number of seconds, got -1.0",
        ),
        (
            ["--mode=prepare", "--config=configs/own_photos.py"],
            "error: dataset.noisy_dir: '' is not a directory",
        ),
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(launch, tmp_path, args, message):
    args = [a.replace("=W", f"={tmp_path / 'w'}") for a in args]
    run = launch(*args)
    assert run.returncode == 2, run.stderr[-3000:]
    # INFO log lines (e.g. prepare's one-line runtime description) may come first.
    lines = [x for x in run.stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d \w+\] ", x)]
    assert len(lines) == 1 and lines[0].startswith(message), run.stderr[-3000:]
    assert not (tmp_path / "w").exists()  # failed before any work


def test_config_found_from_another_directory(launch, tmp_path):
    """--config configs/dnd.py run outside the checkout resolves under the install root."""
    run = launch(
        "--mode=submit",
        "--config=configs/dnd.py",
        "--checkpoint=C",
        f"--output={tmp_path / 'o'}",
        "--config.eval.batch=0",
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "eval.batch must be a positive integer" in run.stderr
    (tmp_path / "configs").mkdir()  # the current directory comes first
    (tmp_path / "configs" / "dnd.py").write_text("def get_config():\n    return {'a': 1}\n")
    run = launch("--config=configs/dnd.py", "--config.b=1", "--workdir=w", cwd=tmp_path)
    assert run.returncode == 2
    assert "error: --config.b: configs/dnd.py has no field 'b'" in run.stderr


def test_jax_flags_take_effect():
    """JAX's absl flags are ours: --jax_num_cpu_devices and --jax_platforms change jax."""
    code = (
        "import sys, jax\n"
        "from sassid_jax import cli\n"
        "cli.dispatch = lambda mode: print(mode, jax.config.jax_platforms, len(jax.devices()),"
        " jax.config.jax_default_matmul_precision) or 0\n"
        "cli.run(sys.argv)\n"
    )
    args = ["--mode=denoise", "--checkpoint=C", "--input=I", "--output=O"]
    jax_flags = [
        "--jax_platforms=cpu",
        "--jax_num_cpu_devices=3",
        "--jax_default_matmul_precision=highest",
    ]
    run = subprocess.run(
        [sys.executable, "-c", code, *jax_flags, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["denoise", "cpu", "3", "highest"]


def test_help_is_one_text_for_every_entry_point_and_lists_every_flag(launch):
    runs = [launch("--help"), _sassid("--help", env=launch.env), launch("-h")]
    assert [r.returncode for r in runs] == [0, 0, 0], runs[0].stderr[-3000:]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    text = runs[0].stdout
    for name, mode in cli.MODES.items():  # one line per mode: what it does, what it needs
        (line,) = [x for x in text.splitlines() if x.startswith(f"  {name} ")]
        assert mode.summary in line and all(f"--{f}" in line for f in mode.required), line
    shown = set(re.findall(r"^  --(?:\[no\])?(\w+):", text, re.M))
    code = (
        "from sassid_jax import cli\n"
        "cli.define_flags(['sassid'])\n"
        "print(*(f.name for f in cli.FLAGS.flags_by_module_dict()['sassid_jax.cli']))\n"
    )
    defined = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    ours = set(defined.stdout.split()) - set(cli.HELP_FLAGS)
    assert {"colour_sigma", "safeguard", "network", "tile"} <= ours
    assert ours <= shown, ours - shown


def test_helpfull_lists_jax_flags_and_help_ours(launch):
    full = launch("--helpfull")
    assert full.returncode == 0
    assert "--jax_platforms" in full.stdout and "--jax_compilation_cache_dir" in full.stdout
    assert _sassid("--helpfull", env=launch.env).stdout == full.stdout
    run = launch("--help")
    assert run.returncode == 0
    short = run.stdout
    assert "--mode: <train|denoise|eval|submit|prepare|analyze>" in short
    assert "--jax_platforms:" not in short


def test_resolve_config_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_config_path("configs/default.py") == str(REPO / "configs" / "default.py")
    assert cli.resolve_config_path("configs/default.py:x").endswith("default.py:x")
    (tmp_path / "mine.py").write_text("")
    assert cli.resolve_config_path("mine.py") == "mine.py"
    argv = ["prog", "--config", "configs/dnd.py", "--mode=eval", "--config=mine.py"]
    assert cli.with_resolved_config(argv) == [
        "prog",
        "--config",
        str(REPO / "configs" / "dnd.py"),
        "--mode=eval",
        "--config=mine.py",
    ]
    with pytest.raises(UserInputError, match="no config file 'configs/none.py'"):
        cli.resolve_config_path("configs/none.py")
