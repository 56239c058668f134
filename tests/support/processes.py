"""Real `modelyard` processes for tests: run the CLI, start `serve`, wait until it answers, stop it and read its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from .paths import REPO
from .servers import free_port
from .waiting import wait_until


CLI = [sys.executable, "-m", "modelyard.cli"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, input=input,
                          env={**os.environ, **(env or {})})


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(ready, timeout, "the server to become ready", interval=0.1)


def serve(tmp_path: Path, *extra: str, env: dict[str, str] | None = None,
          output: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`output`: write the server's output to this file rather than a pipe (a pipe nobody reads fills up, and a
    chatty server, at DEBUG, then blocks)."""
    port = free_port()
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    sink = open(output, "w") if output is not None else subprocess.PIPE  # noqa: SIM115 (the child holds it)
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), *extra], cwd=tmp_path, text=True,
                            stdout=sink, stderr=subprocess.STDOUT, env={**clean_env, **(env or {})})
    if output is not None:
        sink.close()  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


class RunnerProcesses:
    """`modelyard runner` subprocesses for crash tests, each logging to its own file. The harness using it sets
    `tmp` (logs, data dir, cwd), `config` (the config file) and `procs` (a list it starts empty)."""

    tmp: Path
    config: Path
    procs: list[tuple[subprocess.Popen, Path]]

    def start_runner(self, name: str) -> subprocess.Popen:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen([*CLI, "runner", "--config", str(self.config), "--data-dir", str(self.tmp / "data"),
                                 "--name", name, "--log-level", "info"],
                                env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=self.tmp)
        self.procs.append((proc, log))
        return proc

    def completions(self) -> Counter:
        """Completions each runner had accepted (its conditional UPDATE won), from the runners' own logs."""
        seen: Counter = Counter()
        for _, log in self.procs:
            for m in re.finditer(r"job (job_[0-9a-f]+) completed by", log.read_text(errors="replace")):
                seen[m.group(1)] += 1
        return seen

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
