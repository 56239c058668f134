"""What the long-stream and memory benches share: the native stub upstream (bench/stub_sse.c, built here with gcc),
the gateway under test started as `modelyard serve`, and readings of a process tree from /proc.

The stub is C so that it costs the gateway almost nothing on a 2-core machine; it is compiled once per source
version into bench/.build/ (git ignores it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
KEY = "myd_bench-admin-key-0123456789abcdef"
SOURCE = HERE / "stub_sse.c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the process meant to listen on {port} exited ({proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def build_stub() -> Path:
    """Compile bench/stub_sse.c (cached by its content) and return the binary's path."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("the native stub needs a C compiler (apt-get install gcc)")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = HERE / ".build" / f"stub_sse-{digest}"
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
        tmp.rename(out)
    return out


def cpu_share(seconds: float = 0.5) -> float:
    """The share of one core a busy loop gets here now: on a shared machine, what any process can count on."""
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        pass
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def pin(cpus: set[int] | None):  # noqa: ANN201 - a preexec_fn or None
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def split_cores(pin_gateway: bool) -> tuple[set[int] | None, set[int] | None]:
    """(gateway cores, tools cores): with pinning, the gateway gets the last core and the stub and client the rest."""
    if not pin_gateway:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two cores")
    return {cpus[-1]}, set(cpus[:-1])


def start_stub(port: int, interval_ms: int = 50, tokens: int = 400, cpus: set[int] | None = None
               ) -> subprocess.Popen:
    proc = subprocess.Popen([str(build_stub()), str(port), str(interval_ms), str(tokens)], preexec_fn=pin(cpus))
    wait_port(port, proc)
    return proc


def gateway_config(path: Path, stub_port: int, models: dict[str, str], extra: str = "") -> Path:
    """A config whose models each point at one of the stub's paths (`/sse:50:400/v1`, `/json/v1`, ...)."""
    path.write_text("builtin_models: false\n" + extra + "models:\n" + "".join(
        f"  - id: {name}\n    deployments:\n      - backend: openai\n"
        f"        base_url: http://127.0.0.1:{stub_port}{prefix}\n        model: bench-model\n"
        f"        max_concurrency: 10000\n" for name, prefix in models.items()))
    return path


@dataclass
class Gateway:
    proc: subprocess.Popen
    port: int
    data: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def start_gateway(config: Path, data: Path, *, workers: int = 1, cpus: set[int] | None = None,
                  env: dict[str, str] | None = None) -> Gateway:
    port = free_port()
    log = open(os.environ.get("MODELYARD_BENCH_LOG", os.devnull), "a")
    cmd = [sys.executable, "-m", "modelyard.cli", "serve", "--port", str(port), "--config", str(config),
           "--data-dir", str(data)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env={**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning",
                                      **(env or {})}, stdout=log, stderr=log, preexec_fn=pin(cpus))
    wait_port(port, proc)
    return Gateway(proc, port, data)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- /proc readings of a process and its children

def tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's `--workers` processes are its children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            pass
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of the process tree now (VmRSS), in MB."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def memory_parts(pid: int) -> dict[str, float]:
    """RSS of the process tree split as /proc/<pid>/status does (MB): anonymous (the heaps), file-backed (mapped
    files: code, and a database's memory-mapped pages) and shared; and the threads it runs."""
    parts = {"anon": 0.0, "file": 0.0, "shmem": 0.0, "threads": 0.0}
    names = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem", "Threads:": "threads"}
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key = names.get(line.split(":", 1)[0] + ":")
                if key:
                    parts[key] += int(line.split()[1]) / (1 if key == "threads" else 1024)
        except OSError:
            pass
    return parts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree so far."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def scrape(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of the named series on the gateway's /metrics (the admin key reads it)."""
    import httpx

    try:
        text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found
