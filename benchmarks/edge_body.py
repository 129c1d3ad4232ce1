"""Peak memory of an API process sent one unauthenticated 200 MiB JSON body to /v1/ai-results.

The service runs in a uvicorn process of its own (SQLite, one bootstrap admin key); this
process declares a 200 MiB body without credentials and sends it as fast as the server takes
it, then prints the status line, how much the server took before answering or closing, and the
server's resident memory before and at its peak (``VmHWM``)::

    python benchmarks/edge_body.py

The credentials are checked on the headers, so the answer is ``401`` with ``Connection:
close`` after the socket buffers' worth of body, and the peak stays where it started.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import sys, uvicorn
from antifragile.service import Settings, create_app
settings = Settings.from_env({"ANTIFRAGILE_DATABASE_URL": "sqlite:///" + sys.argv[2],
                              "ANTIFRAGILE_ADMIN_API_KEYS": "Bench-edge-K3y-9f3Qz7LmT2x"})
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def rss(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) // 1024
    return -1


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(Path(tempfile.mkdtemp()) / "edge.db")]
    )
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        before = rss(proc.pid, "VmRSS")
        size = 200 * 1024 * 1024
        chunk = b"[" + b"1," * (1024 * 1024 // 2 - 1) + b"1]"
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"POST /v1/ai-results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < size:
                part = chunk[: min(len(chunk), size - sent)]
                sock.sendall(part)
                sent += len(part)
        except OSError:
            pass
        sock.settimeout(30)
        answer = sock.recv(200)
        sock.close()
        time.sleep(0.5)
        status = answer.split(b"\r\n", 1)[0].decode()
        print(
            f"status line: {status}  sent before the answer/close: "
            f"{sent // (1024 * 1024)} MiB  RSS before: {before} MiB  "
            f"peak RSS: {rss(proc.pid, 'VmHWM')} MiB"
        )
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
