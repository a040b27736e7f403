"""Shared fixtures: the real data beside the project (../shared/data), skipped when absent.

Also a lasting JAX compilation cache and light XLA optimisation for the whole test session
(`pytest_configure`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
# Set to 1 for a session that starts from an empty cache (removed at its end): a cold timing.
COLD_CACHE_VARIABLE = "SASSID_TESTS_COLD_CACHE"
# The lasting cache's size limit: JAX evicts the least recently used entries beyond it.
CACHE_MAX_BYTES = 2 << 30
# The tests' networks are tiny: XLA's optimisation passes and its new CPU fusion emitters cost
# more than they save (a tiny run compiles in about a quarter of the time). Semantics are
# unchanged; every process of a session, subprocesses included (they inherit XLA_FLAGS),
# compiles the same way.
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
_CACHE_KEY = pytest.StashKey[str]()


def default_cache_folder() -> Path:
    """The lasting test cache: $XDG_CACHE_HOME (else ~/.cache)/sassid_jax/test-compilation-cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sassid_jax" / "test-compilation-cache"


def pytest_configure(config: pytest.Config) -> None:
    """Point JAX's persistent compilation cache at one folder for this session and the next.

    Many tests train the same tiny networks (same shapes, same programs) in this process, in
    the other pytest-xdist worker and in subprocesses (launch.py, the loopback cluster
    workers); each run builds new jitted functions, so without a cache every run compiles
    every program again, most of a tiny run's time. The folder goes through the environment
    (xdist workers and every subprocess inherit it). It is, in this order: the caller's
    JAX_COMPILATION_CACHE_DIR (kept); with SASSID_TESTS_COLD_CACHE=1 a fresh temporary folder
    (removed at the end by the process that made it); else `default_cache_folder()`, kept
    between sessions, so that the next run of the suite compiles only what changed (JAX keys
    each entry by the program, the JAX version and the XLA flags). Every entry is cached (min
    compile time 0); the size limit (CACHE_MAX_BYTES, least recently used entries evicted)
    also turns on JAX's file lock, so concurrent writers of one entry never expose a
    half-written file.
    """
    if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_MAX_BYTES))
    folder = os.environ.get(CACHE_VARIABLE)
    if not folder:
        if os.environ.get(COLD_CACHE_VARIABLE) == "1":
            folder = tempfile.mkdtemp(prefix="sassid-tests-jax-cache-")
            config.stash[_CACHE_KEY] = folder
        else:
            folder = str(default_cache_folder())
            os.makedirs(folder, exist_ok=True)
        os.environ[CACHE_VARIABLE] = folder
    import jax  # may be imported already: its flags read the environment once, at import

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
    jax.config.update(
        "jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"])
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_CACHE_KEY, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(CACHE_VARIABLE, None)


# Module-scoped fixtures that train (or start) something several tests then read.
SHARED_RUNS = frozenset({"uninterrupted", "runs", "source_run", "rising", "emulator"})
# Session-scoped fixtures that train something tests of several modules then read.
SESSION_RUNS = frozenset({"single_process_run"})


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """Order and group the tests for pytest-xdist (pyproject: --dist loadgroup, no reorder).

    Tests that use one of SHARED_RUNS get one xdist_group per module, and those that use one
    of SESSION_RUNS one group per fixture, so that one worker builds that fixture once instead
    of both building it. The `slow` tests go first, then the groups, then the rest (each in
    collection order): the workers take the longest work while there is plenty left, instead
    of one of them finishing a slow test alone at the end. Without xdist (no worker) nothing
    changes. A wrapper: the marks go on before xdist's worker reads them (in its own
    pytest_collection_modifyitems), and `_name_groups` runs after it.
    """
    worker = hasattr(config, "workerinput")
    if worker:
        _mark_and_order(items)
    result = yield
    if worker and config.getvalue("loadgroup"):
        _name_groups(items)
    return result


def _mark_and_order(items: list[pytest.Item]) -> None:
    for item in items:
        session = sorted(SESSION_RUNS.intersection(item.fixturenames))
        if session:
            item.add_marker(pytest.mark.xdist_group(session[0]))
        elif SHARED_RUNS.intersection(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return 1 if item.get_closest_marker("xdist_group") else 2

    items.sort(key=rank)


def _name_groups(items: list[pytest.Item]) -> None:
    """Give each grouped test the node id suffix "@<group>" by which xdist's scheduler groups.

    pytest-xdist 3.8.0 writes it into item._nodeid, which pytest 9.2 no longer reads (its node
    ids are structured, item._id), so loadgroup silently groups nothing (pytest-xdist issue
    #1386, fix proposed in PR #1388). Where xdist's suffix did take (older pytest, a fixed
    xdist) nothing is done."""
    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if names and not item.nodeid.endswith("@" + "_".join(names)):
            from _pytest.nodeid import NodeId  # pytest 9.2's structured node ids

            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(scope="session")
def launch():
    """`launch(*args, cwd=REPO_ROOT, env=None, timeout=300)`: `python launch.py ARGS` as a
    Finished (returncode, stdout, stderr, peak_bytes), forked from one warm server per session
    (per xdist worker) that has imported the command line once (tests/launcher.py)."""
    from tests.launcher import Launcher

    launcher = Launcher({**os.environ, "JAX_PLATFORMS": "cpu"})
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; the test is skipped (with the reason) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A TFDS data_dir holding the prepared sasl_embedded, made once per session (per xdist
    worker): defined here, not in a test module, since a module that imports a fixture gets
    its own copy of it, prepared again."""
    from sassid_jax.data.embedded import load_split

    path = tmp_path_factory.mktemp("tfds")
    load_split("test", str(path))
    return path


@pytest.fixture(scope="session")
def single_process_run(data_dir, tmp_path_factory) -> Path:
    """Workdir of a finished single-process run of tiny_config(data_dir, TWO_PROCESS_STEPS):
    the run that every two-process test (test_sharding, test_cluster) must end like, trained
    once per session (per xdist worker; its users share one xdist_group). Read-only."""
    from sassid_jax import train
    from tests.test_sharding import TWO_PROCESS_STEPS
    from tests.test_train import tiny_config

    path = tmp_path_factory.mktemp("single_process_run")
    train.train_and_evaluate(tiny_config(data_dir, TWO_PROCESS_STEPS), path)
    return path
