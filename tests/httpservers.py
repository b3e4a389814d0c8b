"""Real HTTP servers on loopback for the network tests: Python's static http.server (in a thread,
with optional injected faults and a request log) and nginx from Debian (a subprocess)."""

from __future__ import annotations

import http.server
import os
import re
import signal
import sys
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


class StaticServer:
    """``python -m http.server``'s handler serving ``root``, in a thread, with a log of the paths
    requested and optional faults: ``fail(path, n)`` returns True for a request that is to fail
    (answered with ``fault``: "500", "drop" (connection closed without an answer), "truncate" (half
    the body, then closed), "garbage" (the body with a flipped bit), "endless" (a body without a
    length that goes on, up to 256 MiB), or "redirect" (302 to ``redirect_to``)).

    With ``batches`` it also answers batched chunk reads as spec/store.md SERVE-5 describes them
    (``<dir>/.chunks/<id><id>...`` for the store ``<dir>``), written here from the spec, not from
    pycatar's server; the faults apply to those answers too, and "lie" answers one with a chunk size
    beyond the end of the answer."""

    def __init__(self, root, *, fault: str | None = None, fail=None, auth: str | None = None,
                 limit: int | None = None, redirect_to: str | None = None, delay: float = 0.0,
                 batches: bool = False, http10: bool = False):
        self.root = os.fspath(root)
        self.batches = batches
        self.delay = delay  # seconds every answer waits (a distant server)
        self.inflight = self.most_inflight = 0  # requests being answered now, and at most
        self.log: list[tuple[str, str]] = []
        self.fault = fault
        self.fail = fail or (lambda path, n: False)
        self.auth = auth
        self.limit = limit  # after this many requests the server stops answering (dies)
        self.redirect_to = redirect_to
        self.sent = 0  # bytes of endless bodies sent
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            # http10: HTTP/1.0, a connection closed after every answer, as `python3 -m http.server` runs
            protocol_version = "HTTP/1.0" if http10 else "HTTP/1.1"

            def __init__(self, *a, **kw):
                super().__init__(*a, directory=server.root, **kw)

            def log_message(self, *a):
                pass

            def _batch_body(self) -> bytes | None:
                """SERVE-5's answer for a batched read, or None if the path is not one."""
                if not server.batches or "/.chunks/" not in self.path:
                    return None
                store, ids = self.path.split("/.chunks/", 1)
                body = [b"CACHUNKS"]
                for i in range(0, len(ids), 64):
                    h = ids[i:i + 64]
                    try:
                        with open(os.path.join(server.root, store.lstrip("/"), h[:4], h + ".cacnk"), "rb") as f:
                            data = f.read()
                        body += [struct.pack("<Q", len(data)), data]
                    except OSError:
                        body.append(b"\xff" * 8)
                return b"".join(body)

            def _gate(self) -> bool:
                with server.lock:
                    n = len(server.log)
                    server.log.append((self.command, self.path))
                if server.delay:
                    with server.lock:
                        server.inflight += 1
                        server.most_inflight = max(server.most_inflight, server.inflight)
                    time.sleep(server.delay)
                    with server.lock:
                        server.inflight -= 1
                if server.limit is not None and n >= server.limit:
                    self.close_connection = True
                    self.connection.close()
                    return False
                if server.auth is not None and self.headers.get("Authorization") != server.auth:
                    self.send_error(401)
                    return False
                if server.fault and server.fail(self.path, n):
                    if server.fault.isdigit():  # "500", "414", ...
                        self.send_error(int(server.fault))
                    elif server.fault == "redirect":
                        self.send_response(302)
                        self.send_header("Location", server.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif server.fault == "endless":
                        self.close_connection = True
                        self.send_response(200)
                        self.send_header("Connection", "close")
                        self.end_headers()
                        block = b"\x28\xb5\x2f\xfd" + bytes(65532)
                        try:
                            for _ in range(4096):  # 256 MiB at most: a test never hangs on it
                                self.wfile.write(block)
                                server.sent += len(block)
                        except OSError:
                            pass
                    elif server.fault == "lie":
                        body = b"CACHUNKS" + struct.pack("<Q", 1 << 40) + b"x" * 100
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    elif server.fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif server.fault in ("truncate", "garbage"):
                        body = self._batch_body()
                        try:
                            if body is None:
                                with open(self.translate_path(self.path), "rb") as f:
                                    body = f.read()
                        except OSError:
                            self.send_error(404)
                            return False
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        if server.fault == "truncate":
                            self.wfile.write(body[: len(body) // 2])
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                        else:
                            self.wfile.write(body[:-1] + bytes([body[-1] ^ 1]))
                    return False
                return True

            def do_GET(self):
                if self._gate():
                    body = self._batch_body()
                    if body is None:
                        super().do_GET()
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_HEAD(self):
                if self._gate():
                    super().do_HEAD()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, suffix: str = ".cacnk") -> list[str]:
        with self.lock:
            return [p for m, p in self.log if m == "GET" and p.endswith(suffix)]


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not ended after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light",
                       shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        if IN_CI:
            pytest.fail("nginx is required in CI (apt-get install nginx-light failed)")
        pytest.skip("nginx not installed (not CI, so skipping)")
    return path


class Nginx:
    """nginx serving ``root`` as static files on a loopback port (its own prefix, pid and logs)."""

    def __init__(self, root, workdir):
        self.binary = nginx_binary()
        self.root = os.path.abspath(root)
        self.dir = os.fspath(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
daemon off;
master_process off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {self.dir}/access.log;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
    }}
}}
""")
        self.proc = subprocess.Popen([self.binary, "-p", self.dir, "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except AssertionError:
            self.proc.kill()
            raise AssertionError(f"nginx did not start: {self.proc.stderr.read().decode(errors='replace')}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)

    def access_log(self) -> list[str]:
        with open(os.path.join(self.dir, "access.log")) as f:
            return f.read().splitlines()


class PycatarServe:
    """``python -m pycatar serve --listen=HOST:0 ARGS...``, its port parsed from the first line."""

    def __init__(self, log_path, *args, host="127.0.0.1"):
        self.log_path = str(log_path)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "pycatar", "serve", f"--listen={host}:0", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            m = re.match(r"Listening on (https?)://(\S+):(\d+)/\n", self.stderr())
            if m:
                self.scheme, self.port = m.group(1), int(m.group(3))
                self.url = f"{self.scheme}://{m.group(2)}:{self.port}/"
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"server did not start: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=10) -> float:
        """Send ``sig``; the server must exit 0 within ``timeout`` without a traceback. Returns the time taken."""
        t = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("server did not stop") from None
        finally:
            self.log.close()
        assert rc == 0, self.stderr()
        assert "Traceback" not in self.stderr()
        return time.monotonic() - t

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if self.proc.poll() is None:
            if exc_type is None:
                self.stop()
            else:
                self.proc.kill()
                self.proc.wait()
        return False
