"""A server speaking the S3 protocol on loopback for the object-store tests: moto's standalone
server (``moto[server]`` from PyPI) as a subprocess, and a proxy in front of it that logs every
request and can answer some with throttling (503 SlowDown) or server errors (500) instead of
passing them on."""

from __future__ import annotations

import http.client
import http.server
import os
import subprocess
import sys
import threading
import time

from httpservers import free_port, stop_process, wait_port

ACCESS_KEY = "pycatar-test-key"
SECRET_KEY = "pycatar-test-secret-do-not-print"


def s3_env(**extra) -> dict:
    """The environment a pycatar subprocess talks to the test server with (credentials only there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


class MotoServer:
    """``python -m moto.server`` on a free loopback port."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(os.path.join(str(workdir), "moto.log"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=s3_env())
        try:
            wait_port(self.port, 30)
        except AssertionError:
            self.stop()
            raise
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


class S3Proxy:
    """A logging HTTP proxy in front of ``upstream_port``; ``fault(n, method, path)`` (n: the request's
    number from 1) may return a status to answer with instead (503 answers say SlowDown, others
    InternalError, as S3 does)."""

    def __init__(self, upstream_port: int, fault=None):
        self.upstream_port = upstream_port
        self.fault = fault
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n_body = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n_body) if n_body else b""
                with proxy.lock:
                    n = len(proxy.requests) + 1
                    status = proxy.fault(n, self.command, self.path) if proxy.fault else None
                    proxy.requests.append((self.command, self.path, status or 0))
                if status:
                    code = "SlowDown" if status == 503 else "InternalError"
                    text = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                            f'<Message>injected</Message></Error>').encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(text)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with proxy.lock:
                    proxy.requests[n - 1] = (self.command, self.path, resp.status)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                       else resp.getheader("Content-Length") or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def chunk_gets(self) -> list[str]:
        """The chunk names (``<id>.cacnk``) GET asked for, answered or not."""
        with self.lock:
            return [p.rsplit("/", 1)[-1] for m, p, _ in self.requests if m == "GET" and p.endswith(".cacnk")]

    def count(self, method: str, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and contains in p)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
