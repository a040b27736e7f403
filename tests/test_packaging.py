"""pyproject.toml and the requirements files: what `pip install -e .` and .ci/run read."""

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
    assert {"sassid_jax", "sassid_jax.*", "configs"} <= set(include)
    from sassid_jax import cli

    assert callable(cli.run)
