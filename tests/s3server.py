"""A real S3 API server for the tests: moto's server mode in a subprocess on a loopback port.

Nothing patches botocore: the code under test talks HTTP to this process exactly as it would to
AWS, R2 or MinIO. moto checks no signatures, expiry or policies, so tests decode what postroom
signs instead. Test-side bucket set-up uses plain boto3 against the same server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

# The credentials the AWS chain finds first (environment); moto accepts any.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never fall through to a developer's profile or an instance-metadata lookup.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
S3_ENV_REMOVED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """One `python -m moto.server` process and the URL it answers on."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        """A plain (synchronous) boto3 S3 client for test set-up and inspection."""
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self, stem: str = "postroom") -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_moto_server(log_dir: Path, timeout: float = 60.0, port: int | None = None,
                      recording: Path | None = None, replay: bool = False) -> MotoServer:
    """Start moto's server on a free loopback port (or `port`) and wait until it answers
    ListBuckets. With `recording`, moto appends every request to that file; with `replay` too,
    it first replays the file (tests/moto_recording.py), so a server killed and started again on
    the same port holds the same objects before it answers anyone."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in S3_ENV_REMOVED} | S3_ENV
    module = "moto.server"
    if recording is not None:
        env |= {"MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(recording),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                "MOTO_REPLAY_FIRST": "1" if replay else "0"}
        module = "tests.moto_recording"
    for _ in range(3):  # another process may take the port between our probe and moto's bind
        port = port or free_port()
        log_path = log_dir / f"moto-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        server = MotoServer(proc, port, log_path)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(server.endpoint_url + "/"):
                return server
            time.sleep(0.1)
        server.stop()
    raise RuntimeError("moto server did not start:\n" + log_path.read_text(errors="replace"))
