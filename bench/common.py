"""What every bench shares: interleaved timing, machine info, JSON records, plain-text tables.

- Timing: `interleaved` times two or more sides in alternating order (AB, BA, ...), so a
  change of machine load hits every side alike; tables give medians (`medians`) and ratios
  of medians measured side by side. `repeat` times one side alone.
- Machine: `machine_info` (CPU model, cores, affinity, AVX-512, versions, load average) and
  `load_state` (the 1-minute load against the bench's own threads: quiet or loaded).
- Records: `write_record` writes a JSON record atomically (`sassid_jax.io.atomic_files`),
  `record_path` names it in bench/results/.
- Tables: `markdown_table` and `text_table`.
- Child processes: `run_child` runs a Python script and returns the JSON of its last line;
  `launch_run` trains (or reads) one resumable launch.py run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
VERSIONED = ("jax", "jaxlib", "flax", "numpy", "torch", "pillow", "tensorflow-datasets")


def on_path() -> None:
    """Put the repository (sassid_jax, configs) and bench/ (sibling scripts) on sys.path."""
    for folder in (str(BENCH), str(REPO)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


# ------------------------------------------------------------------------------------ timing


def timestamp() -> str:
    """Local time to the second, ISO 8601 (the start of a run, in records and file names)."""
    return datetime.datetime.now().isoformat(timespec="seconds")


def repeat(run: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of `repeats` consecutive calls of run(), each timed on its own."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def interleaved(
    sides: Mapping[str, Callable[[], float]],
    lo: int,
    hi: int | None = None,
    budget: float = math.inf,
) -> tuple[dict[str, list[float]], list[tuple[float, float, float]]]:
    """Times of each side, repeats interleaved: round i runs the sides in order, reversed on
    odd rounds. Each callable returns the seconds it measured (e.g. per step).

    After the first round the number of rounds is fitted to `budget` seconds, within
    [lo, hi] (hi defaults to lo). Returns ({side: [seconds per round]}, load averages: one
    before the first round and one after each).
    """
    hi = lo if hi is None else hi
    names = list(sides)
    times: dict[str, list[float]] = {k: [] for k in names}
    loads = [os.getloadavg()]
    rounds, i = hi, 0
    while i < rounds:
        for k in names if i % 2 == 0 else names[::-1]:
            times[k].append(sides[k]())
        loads.append(os.getloadavg())
        if i == 0:
            first = sum(v[0] for v in times.values())
            rounds = int(min(hi, max(lo, budget // max(first, 1e-9)))) if budget < math.inf else hi
        i += 1
    return times, loads


def medians(times: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """{side: median of its times}."""
    return {k: float(statistics.median(v)) for k, v in times.items()}


# ----------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """Cores this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def versions(names: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of the packages in `names` that are installed (no imports)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU model, core counts, AVX-512, Python and package versions, XLA_FLAGS, the load
    average now, and the bench's own thread count (default: the available cores)."""
    try:
        avx512 = "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        avx512 = False
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": available_cores(),
        "threads": threads or available_cores(),
        "avx512": avx512,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg": os.getloadavg(),
    }


def load_state(load_max: float, threads: int) -> str:
    """'quiet' when the 1-minute load stayed within the bench's own threads (+1), else a
    warning: the machine was shared, only ratios measured side by side mean something."""
    if load_max > threads + 1:
        return "the machine was shared and loaded: read ratios, not absolutes"
    return "quiet"


# ----------------------------------------------------------------------------------- records


def record_path(name: str, started: str) -> Path:
    """bench/results/<name>-<started without colons>.json."""
    return RESULTS / f"{name}-{started.replace(':', '')}.json"


def write_record(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write a bench's JSON record atomically (parent folders created); returns the path."""
    from sassid_jax.io.atomic_files import write_json

    return write_json(path, payload)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file (a table) atomically; returns the path."""
    from sassid_jax.io.atomic_files import write_bytes

    return write_bytes(path, text.encode())


def run_child(
    script: str | os.PathLike[str], args: Sequence[str], timeout: float | None = None, **env: str
) -> Any:
    """Run `python script *args` with extra environment variables; the JSON of its last
    stdout line. Its stderr passes through; a failure raises CalledProcessError, a child
    still running after `timeout` seconds is killed (subprocess.TimeoutExpired)."""
    cmd = [sys.executable, str(script), *args]
    out = subprocess.run(
        cmd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def launch_run(args: Sequence[str], workdir: Path, log: Path) -> dict[str, Any]:
    """Train (or read) one `launch.py` run in a child process, resumable.

    Args:
      args: launch.py's arguments but --workdir (e.g. --config=..., --config.X=V).
      workdir: the run folder; a finished run (workdir/bench_run.json) is read, not rerun.
      log: the file the child's output is appended to.
    Returns:
      {"results": the run's results.json, "wall_seconds": the child's wall time, "command"}.
    """
    done = workdir / "bench_run.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = [sys.executable, "launch.py", *args, f"--workdir={workdir}"]
    print("+", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as stream:
        subprocess.run(cmd, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, check=True)
    record = {
        "results": json.loads((workdir / "results.json").read_text()),
        "wall_seconds": time.perf_counter() - start,
        "command": " ".join(cmd[1:]),
    }
    done.write_text(json.dumps(record))
    return record


def print_json_line(payload: Any) -> None:
    """The child's side of `run_child`: its result as one JSON line on stdout."""
    print(json.dumps(payload), flush=True)


# ------------------------------------------------------------------------------------ tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells formatted with str())."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], rule: bool = True) -> str:
    """A fixed-width plain-text table: the first column left-aligned, the others right;
    each column as wide as its widest cell; a rule of dashes under the header."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return " ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    out = [line(cells[0])]
    if rule:
        out.append("-" * len(out[0]))
    return "\n".join(out + [line(r) for r in cells[1:]])
