"""A real S3-protocol server for tests: moto's, as its own process on a free loopback port.

``moto_s3(log_dir, bucket)`` starts it, points every client at it through the environment only
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` / ``AWS_ENDPOINT_URL``,
read by s3fs and boto3, and inherited by subprocesses), creates ``bucket`` and yields the endpoint;
on exit the server is stopped and the environment restored.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port


@contextmanager
def moto_s3(log_dir: Path, bucket: str) -> Iterator[str]:
    import requests

    # the project environment's server first: another one on PATH may be another moto version
    venv = Path(sys.executable).with_name("moto_server")
    exe = str(venv) if venv.exists() else shutil.which("moto_server") or "moto_server"
    port = free_port()
    log = log_dir / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in ("FSSPEC_S3_ENDPOINT_URL", "AWS_PROFILE"):
                mp.delenv(var, raising=False)  # the endpoint comes from AWS_ENDPOINT_URL alone, as in a pod
            for var, value in {"AWS_ACCESS_KEY_ID": "genctr-test", "AWS_SECRET_ACCESS_KEY": "genctr-test-secret",
                               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
                mp.setenv(var, value)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
            import boto3
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()  # a client cached for another endpoint must not be reused
            boto3.client("s3").create_bucket(Bucket=bucket)
            try:
                yield endpoint
            finally:
                s3fs.S3FileSystem.clear_instance_cache()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
