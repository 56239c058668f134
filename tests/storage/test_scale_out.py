"""Scale-out on a bucket: a gateway and a `modelyard runner` process on one PostgreSQL database and one S3 bucket
(SeaweedFS), sharing no folder. An image the runner makes is readable through the gateway's link; files uploaded
through the gateway with the openai SDK live in the bucket."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import yaml

from ..conftest import fresh_postgres_database, make_settings, running
from ..support.jobs import FAST, wait_status
from ..support.paths import REPO

MEDIA_SECRET = "shared-media-secret-" + "m" * 20  # replicas sharing a bucket share the link key too


def _files_under(folder: Path, part: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and part in p.parts]


def test_runner_and_gateway_share_only_the_bucket(tmp_path: Path, s3_server, postgres_problem) -> None:
    bucket = "scale-" + secrets.token_hex(4)
    s3_server.make_bucket(bucket)
    with fresh_postgres_database(postgres_problem) as db:
        runner_dir, gateway_dir = tmp_path / "runner", tmp_path / "gateway"
        config = tmp_path / "runner.yaml"
        config.write_text(yaml.safe_dump({
            "database_url": db, "media_secret": MEDIA_SECRET, "storage": s3_server.storage(bucket),
            **{k: v for k, v in FAST.items()}}))
        # the gateway: no runner of its own, the bucket's keys in its settings, links proxied through it
        settings = make_settings(gateway_dir, database_url=db, job_runner=False, media_secret=MEDIA_SECRET,
                                 storage=s3_server.storage(bucket, proxy=True, access_key_id=s3_server.access_key,
                                                           secret_access_key=s3_server.secret_key), **FAST)
        with running(settings) as gw:
            env = {**os.environ, **s3_server.env(),  # the runner's keys come from the standard variables
                   "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
            env = {k: v for k, v in env.items() if not k.startswith("MODELYARD_")}
            log = (tmp_path / "runner.log").open("wb")
            runner = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "runner", "--config", str(config),
                                       "--data-dir", str(runner_dir), "--name", "far-runner"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path)
            try:
                with httpx.Client(base_url=gw.url, timeout=60) as http:
                    r = http.post("/v1/images/generations", headers=gw.headers(), json={
                        "model": "demo-image", "prompt": "a lighthouse", "size": "64x64", "steps": 1, "async": True})
                    assert r.status_code == 202, r.text
                    done = wait_status(http, f"/api/jobs/{r.json()['id']}", gw.headers(),
                                       {"completed", "failed", "dead_letter"}, timeout=240)
                    assert done["status"] == "completed", (done, (tmp_path / "runner.log").read_text()[-3000:])
                    url = done["result"]["images"][0]["url"]
                    assert url.startswith(gw.url + "/media/img_")  # the gateway's own signed link (proxy mode)
                    png = httpx.get(url, timeout=30)
                    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
                    assert png.headers["content-type"] == "image/png"
                    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403
                # the runner wrote it to the bucket; neither side has it on disk
                assert not _files_under(runner_dir, "media") and not _files_under(gateway_dir, "media")

                client = openai.OpenAI(base_url=gw.v1, api_key=gw.admin_key, max_retries=0)
                data = os.urandom(3 * 1024 * 1024)
                f = client.files.create(file=("blob.bin", io.BytesIO(data)), purpose="user_data")
                assert client.files.content(f.id).content == data
                assert not _files_under(gateway_dir, "files")
                import botocore.session  # the bucket's own API: the objects are there, by key

                s3 = botocore.session.get_session().create_client(
                    "s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                    aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key)
                keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
                assert any(k.endswith("/" + f.id) for k in keys) and any(k.startswith("media/img_") for k in keys)
                client.files.delete(f.id)
                keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
                assert not any(k.endswith("/" + f.id) for k in keys)
            finally:
                runner.terminate()
                try:
                    runner.wait(20)
                except subprocess.TimeoutExpired:
                    runner.kill()
                log.close()
