"""The service when its own PostgreSQL fails: how fast webhooks are answered during the outage,
and how soon after the database returns they are recorded again.

The service (``create_app`` with its own assistant, served by uvicorn on loopback) records signed
WhatsApp webhooks in a PostgreSQL schema of its own, reached through a TCP proxy in this
process. The proxy is cut for ``--outage`` seconds (20): every connection dropped, the port
refusing. A provider stand-in delivers a new message every 0.25 s throughout and, like the
providers, delivers every message answered with a non-2xx again until it gets a 200. Measured:

* ``ok latency`` -- median time to a 200 before the outage;
* ``503 latency`` -- median and highest time to the 503 answers during the outage, and whether
  each carried ``Retry-After``;
* ``first 200 after return`` -- seconds from the proxy's return to the first 200;
* ``lost`` -- messages answered 200 that are not in the inbox afterwards (must be 0), and
  ``recorded twice`` (must be 0).

Needs a PostgreSQL server (``ANTIFRAGILE_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``). Results go to
``benchmarks/results/postgres_outage.json`` and ``.md``::

    python benchmarks/postgres_outage.py                  # a 20 s outage
    python benchmarks/postgres_outage.py --outage 5       # a short one
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder leads sys.path, and its ``queue.py`` would shadow the standard
# library's ``queue``: drop the folder first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import platform
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn

import antifragile
from antifragile.inbound import whatsapp_signature
from antifragile.jobs import Jobs
from antifragile.sandbox import whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.stores import open_store

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET = "benchmark-app-secret"


class Cuttable:
    """A TCP relay to PostgreSQL on this loop; :meth:`cut` drops every connection and closes
    the port, :meth:`restore` opens it again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._link, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._links):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links.add(up_writer)
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                end.transport.abort()
                self._links.discard(end)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def _url(port: int, schema: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = f"schema={schema}"
    return urlunsplit((parts.scheme, f"{userinfo}127.0.0.1:{port}", parts.path, query, ""))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _deliver(
    client: httpx.AsyncClient, base: str, message_id: str
) -> tuple[int, float, bool]:
    payload = whatsapp_text_message(from_="447700900123", body="hello", message_id=message_id)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": whatsapp_signature(SECRET, body),
    }
    started = time.perf_counter()
    response = await client.post(f"{base}/v1/webhooks/whatsapp", content=body, headers=headers)
    took = time.perf_counter() - started
    return response.status_code, took, "retry-after" in response.headers


async def run(outage: float) -> dict[str, Any]:
    target = urlsplit(POSTGRES_URL)
    proxy = Cuttable(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.restore()
    schema = f"bench{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": _url(proxy.port, schema),
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": SECRET,
        }
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    pending: list[str] = []
    ok: list[float] = []
    refused: list[float] = []
    with_retry_after = 0
    first_ok_after: float | None = None
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for n in range(20):
                status, took, _ = await _deliver(client, base, f"wamid.ok-{n}")
                assert status == 200, status
                ok.append(took)
                acknowledged.append(f"wamid.ok-{n}")
            await proxy.cut()
            cut_at = time.perf_counter()
            n = 0
            while time.perf_counter() - cut_at < outage:
                message_id = f"wamid.outage-{n}"
                n += 1
                status, took, retry_after = await _deliver(client, base, message_id)
                if status == 200:
                    acknowledged.append(message_id)
                else:
                    pending.append(message_id)
                    refused.append(took)
                    with_retry_after += retry_after
                await asyncio.sleep(0.25)
            await proxy.restore()
            back_at = time.perf_counter()
            while pending:  # the providers deliver again until they get a 200
                status, _, _ = await _deliver(client, base, pending[0])
                if status == 200:
                    if first_ok_after is None:
                        first_ok_after = time.perf_counter() - back_at
                    acknowledged.append(pending.pop(0))
                else:
                    await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await serving
        await proxy.cut()
    async with Jobs(database_url=_url(target.port or 5432, schema)) as jobs:
        entries = await jobs.queue.find_inbound(limit=100_000)
    store = await open_store(POSTGRES_URL, schema=schema, drop_schema_on_close=True)
    await store.close()
    recorded = [entry.event_id for entry in entries]
    return {
        "outage_s": outage,
        "ok_latency_ms_median": round(statistics.median(ok) * 1000, 1),
        "refused": len(refused),
        "refused_latency_ms_median": round(statistics.median(refused) * 1000, 1)
        if refused
        else None,
        "refused_latency_ms_max": round(max(refused) * 1000, 1) if refused else None,
        "refused_with_retry_after": with_retry_after,
        "first_200_after_return_s": None if first_ok_after is None else round(first_ok_after, 3),
        "acknowledged": len(acknowledged),
        "lost": len(set(acknowledged) - set(recorded)),
        "recorded_twice": len(recorded) - len(set(recorded)),
    }


def _markdown(result: dict[str, Any]) -> str:
    rows = [
        ("outage", f"{result['outage_s']:g} s"),
        ("200 latency before the outage (median)", f"{result['ok_latency_ms_median']} ms"),
        ("webhooks answered 503 during the outage", str(result["refused"])),
        (
            "503 latency (median / max)",
            f"{result['refused_latency_ms_median']} ms / {result['refused_latency_ms_max']} ms",
        ),
        ("503s with Retry-After", f"{result['refused_with_retry_after']} of {result['refused']}"),
        ("first 200 after the database's return", f"{result['first_200_after_return_s']} s"),
        (
            "acknowledged (200) / lost / recorded twice",
            f"{result['acknowledged']} / {result['lost']} / {result['recorded_twice']}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    lines.append("")
    lines.append(
        f"antifragile {antifragile.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; PostgreSQL on loopback behind a TCP relay."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the database is cut")
    args = parser.parse_args()
    result = asyncio.run(run(args.outage))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "postgres_outage.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "postgres_outage.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
