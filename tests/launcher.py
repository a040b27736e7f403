"""A warm `launch.py` for tests: one process imports the command line once, then forks per command.

Each command runs `sassid_jax.cli.run([".../launch.py", *args])` in a child forked from a server
that has imported `sassid_jax.cli` and nothing else (no JAX backend, no TensorFlow, no flags
parsed), so each child starts as a fresh `python launch.py` would after its imports, without
paying for them (2-4 s of CPU per command on 2 cores). A command whose environment differs
from the server's (JAX reads some variables at import) runs as a plain subprocess instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# The server: reads one JSON request per line on stdin, forks, runs the command in the child
# with stdout/stderr in files, and answers one JSON line on stdout. Killed after its timeout.
SERVER = r"""
import json, os, signal, sys, time
sys.path[0] = os.getcwd()  # the repository root, as for `python launch.py` from anywhere
import sassid_jax.cli
answer = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                f = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(f, fd)
                os.close(f)
            sys.argv = [request["program"], *request["args"]]
            sassid_jax.cli.run(sys.argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + request["timeout"]
    timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            timed_out = True
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    reply = {"returncode": code, "peak_kib": usage.ru_maxrss, "timed_out": timed_out}
    answer.write(json.dumps(reply) + "\n")
    answer.flush()
"""


@dataclass(frozen=True)
class Finished:
    """A finished command: exit code, its output, its own peak resident memory (bytes)."""

    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int


class Launcher:
    """Runs `launch.py ARGS` commands through one warm server process (see the module)."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self._server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        timeout: float = 300,
    ) -> Finished:
        """Run `python launch.py *args` in `cwd`; `env` (default: the server's) must equal the
        server's environment to be served warm, else the command runs as a subprocess."""
        if env is not None and env != self.env:
            return _subprocess(args, env, cwd, timeout)
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
            request = {"program": str(REPO_ROOT / "launch.py"), "args": list(args), "cwd": str(cwd)}
            request.update(stdout=out, stderr=err)
            self._server.stdin.write(json.dumps({**request, "timeout": timeout}) + "\n")
            self._server.stdin.flush()
            reply = json.loads(self._server.stdout.readline())
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired(["launch.py", *args], timeout)
            stdout = Path(out).read_text(errors="replace")
            stderr = Path(err).read_text(errors="replace")
        return Finished(reply["returncode"], stdout, stderr, reply["peak_kib"] * 1024)

    def close(self) -> None:
        self._server.stdin.close()
        self._server.wait(timeout=30)


# Runs the command and writes its peak memory (KiB) to argv[1]. A child's ru_maxrss counts the
# memory of the process it was forked from until its exec, so the command is forked from this
# small launcher, not from the (large) pytest worker.
MEASURED = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _subprocess(args, env: dict[str, str], cwd: Path, timeout: float) -> Finished:
    with tempfile.TemporaryDirectory() as folder:
        peak_file = os.path.join(folder, "peak")
        command = [sys.executable, str(REPO_ROOT / "launch.py"), *args]
        run = subprocess.run(
            [sys.executable, "-c", MEASURED, peak_file, *command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        peak_kib = int(Path(peak_file).read_text())
    return Finished(run.returncode, run.stdout, run.stderr, peak_kib * 1024)
