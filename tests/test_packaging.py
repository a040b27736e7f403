"""pyproject.toml and the requirements files: what `pip install -e .` and .ci/run read; the
wheel `pip install .` installs."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # a dependency of pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> list[Requirement]:
    lines = (REPO / name).read_text().splitlines()
    # setuptools reads these files as pyproject's dependencies: every line that is not a
    # comment must be one PEP 508 requirement (no inline comments, no pip options).
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_requirements_are_pinned_pep508_lines(name):
    for req in _requirements(name):
        assert str(req.specifier).startswith("=="), req


@pytest.mark.parametrize(
    ("system", "machine", "wheel"),
    [
        ("Linux", "x86_64", "tensorflow-cpu"),
        ("Windows", "AMD64", "tensorflow-cpu"),
        ("Linux", "aarch64", "tensorflow"),
        ("Darwin", "arm64", "tensorflow"),
    ],
)
def test_exactly_one_tensorflow_per_platform(system, machine, wheel):
    env = {"platform_system": system, "platform_machine": machine}
    chosen = [
        r
        for r in _requirements("requirements.txt")
        if r.name.startswith("tensorflow") and r.name != "tensorflow-datasets"
        if r.marker is None or r.marker.evaluate(env)
    ]
    assert [r.name for r in chosen] == [wheel]
    assert str(chosen[0].specifier) == "==2.21.0"


def test_pyproject_script_and_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["sassid"] == "sassid_jax.cli:run"
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.txt"]
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert set(include) == {"sassid_jax", "sassid_jax.*"}  # no top-level `configs`
    assert project["tool"]["setuptools"]["package-dir"] == {"sassid_jax.configs": "configs"}
    from sassid_jax import cli

    assert callable(cli.run)


# Run from a folder outside the checkout against the installed copy only: the configs that
# `--config configs/X.py` resolves to, each loaded as the CLI loads it (by file path).
_LOAD_INSTALLED = textwrap.dedent(
    """
    import importlib.util, json, sassid_jax
    from sassid_jax import cli

    out = {"package": sassid_jax.__file__, "configs": importlib.util.find_spec("configs")}
    for name in ("configs/default.py", "configs/sasl_paper.py"):
        path = cli.resolve_config_path(name)
        spec = importlib.util.spec_from_file_location("config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out[name] = [path, module.get_config().dataset.name]
    print(json.dumps(out, default=str))
    """
)


def _build_wheel(out: Path) -> Path:
    """The wheel of a copy of the sources (the build leaves build/ and *.egg-info behind)."""
    pytest.importorskip("setuptools")
    src = out / "src"
    for name in ("pyproject.toml", "README.md", "requirements.txt", "requirements-dev.txt"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    for folder in ("sassid_jax", "configs"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    args = ["wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    build = subprocess.run([*pip, *args, str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("sassid_jax-*.whl")
    return wheel


def test_wheel_ships_the_configs_inside_the_package(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    package = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "sassid_jax").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    configs = {f"sassid_jax/configs/{p.name}" for p in (REPO / "configs").glob("*.py")}
    assert names - dist_info == package | configs  # configs/real_noise (the bench's) stays out

    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    args = ["install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    install = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    top = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"sassid_jax", "bin"}  # bin: the `sassid` script
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_INSTALLED],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    shipped = site / "sassid_jax" / "configs"
    assert got["package"] == str(site / "sassid_jax" / "__init__.py")
    assert got["configs"] is None  # no top-level `configs` package to import
    assert got["configs/default.py"] == [str(shipped / "default.py"), "sasl_embedded"]
    # sasl_paper imports default: from sassid_jax.configs, not from a checkout
    assert got["configs/sasl_paper.py"] == [str(shipped / "sasl_paper.py"), "sidd_medium_srgb"]
