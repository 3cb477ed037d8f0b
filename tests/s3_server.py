"""A real S3-compatible server on loopback for the storage tests and bench: moto's server mode.

``S3Server`` runs ``moto_server`` in a session of its own (tests/processes.py), polls it until
it answers, then makes one IAM user with an access key allowed ``s3:*`` and switches moto's
authentication on, so from then on a wrong key or secret is refused as by AWS (moto accepts any
key otherwise). ``env()`` gives a child process the endpoint and that user's credentials the
way a user would: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any

from seldon_batch_tx.storage.paths import filesystem
from tests.loopback import free_port, loopback_env
from tests.processes import ManagedProcess

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
_BOOTSTRAP_KEY = "testing"  # any key works before authentication is switched on


class S3Server(ManagedProcess):
    """moto's S3 (and IAM) on 127.0.0.1:<free port>; ``with S3Server(log) as s3:``."""

    name = "moto S3 server"
    startup_timeout = 60.0

    def __init__(self, log_path: Path | None = None, *, auth: bool = True) -> None:
        self.log_path = log_path
        self.port = 0
        self.auth = auth
        self.access_key = _BOOTSTRAP_KEY
        self.secret_key = _BOOTSTRAP_KEY

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def where(self) -> str:
        return self.endpoint

    def start(self) -> S3Server:
        self.port = free_port()
        moto = Path(sys.executable).with_name("moto_server")
        command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        env = loopback_env()
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        self.spawn([*command, "-H", LOOPBACK, "-p", str(self.port)], env=env)
        self.wait_ready_or_stop()
        try:
            if self.auth:
                self._enable_auth()
        except BaseException:
            self.stop()
            raise
        return self

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float = 5.0) -> int:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def is_ready(self) -> bool:
        try:
            return self._request("GET", "/moto-api/data.json", timeout=1.0) == 200
        except OSError:
            return False

    def client(self, service: str = "s3", *, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 client on this server (the storage code itself goes through fsspec/s3fs)."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key)

    def _enable_auth(self) -> None:
        iam = self.client("iam")
        iam.create_user(UserName="batch")
        iam.put_user_policy(UserName="batch", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="batch")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        # from now on every request is authenticated against moto's IAM
        status = self._request("POST", "/moto-api/reset-auth", b"0")
        if status != 200:
            raise RuntimeError(f"moto refused to switch authentication on (HTTP {status})")

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose S3 clients reach this server with this user's credentials."""
        env = loopback_env(base)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.pop(name, None)
        env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID=self.access_key,
                   AWS_SECRET_ACCESS_KEY=self.secret_key, AWS_DEFAULT_REGION=REGION,
                   AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        return env

    def options(self, **extra: Any) -> dict[str, Any]:
        """fsspec storage options for this server (as ``--storage-options`` would give them)."""
        return {"endpoint_url": self.endpoint, "key": self.access_key, "secret": self.secret_key,
                "client_kwargs": {"region_name": REGION}, **extra}

    def put(self, url: str, data: bytes) -> str:
        """Store ``data`` at ``url`` (``s3://bucket/key``) through fsspec, as a user's upload would."""
        fs, rpath = filesystem(url, self.options())
        fs.pipe_file(rpath, data)
        return url

    def get(self, url: str) -> bytes:
        fs, rpath = filesystem(url, self.options())
        data: bytes = fs.cat_file(rpath)
        return data

    def exists(self, url: str) -> bool:
        fs, rpath = filesystem(url, self.options())
        return bool(fs.exists(rpath))
