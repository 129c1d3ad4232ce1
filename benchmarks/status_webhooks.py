"""The sandbox's status webhooks under chaos: does every status that was not lost arrive?

``--sends`` WhatsApp messages (500 by default) go to the sandbox's WhatsApp simulator over real
HTTP; each is followed by its ``sent``, ``delivered``, ``read`` status webhooks to a local HTTP
receiver that answers ``500`` to one POST in ten. The ``"webhooks"`` fault plan draws per send:
5% lost, 5% duplicated, 5% out of order, 5% delayed (0.2 s), 2% undeliverable (``failed``
``131026``). Retry delays run at ``time_scale=0.001``.

Reported: the sends by fate and final status, the POSTs made and how many were retries, and
the statuses the sandbox decided for sends whose webhooks were not lost, against the distinct
statuses the receiver got (``missing`` must be 0: a refused webhook is retried until
accepted). Results go to ``benchmarks/results/status_webhooks.json``::

    python benchmarks/status_webhooks.py
    python benchmarks/status_webhooks.py --sends 2000 --seed 3
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from antifragile.sandbox import ProviderFault, ProviderSandbox, WhatsAppSimulator

RESULTS = Path(__file__).parent / "results"


def measure(sends: int, seed: int) -> dict[str, Any]:
    """Run the scenario of the module docs and return its figures."""
    received: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = json.loads(body)["entry"][0]["changes"][0]["value"]["statuses"][0]
            with lock:
                received.append((status["id"], status["status"]))
                refuse = len(received) % 10 == 0
            self.send_response(500 if refuse else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/webhooks/whatsapp"
        with ProviderSandbox(
            [WhatsAppSimulator(throughput=1_000_000)],
            webhook_urls={"whatsapp": url},
            time_scale=0.001,
            webhook_interval=0.001,
        ) as sandbox:
            sandbox.faults(
                "whatsapp",
                "webhooks",
                chaos=[
                    (0.05, ProviderFault.lost_webhooks()),
                    (0.05, ProviderFault.duplicated()),
                    (0.05, ProviderFault.out_of_order()),
                    (0.05, ProviderFault.delayed(0.2)),
                    (0.02, ProviderFault.undeliverable()),
                ],
                seed=seed,
            )
            endpoint = f"{sandbox.base_url('whatsapp')}/v21.0/106540352242922/messages"
            started = time.perf_counter()
            with httpx.Client(headers={"authorization": "Bearer token"}) as client:
                for n in range(sends):
                    client.post(
                        endpoint,
                        json={
                            "messaging_product": "whatsapp",
                            "to": "15550001111",
                            "text": {"body": f"message {n}"},
                            "biz_opaque_callback_data": f"af_{n:032x}",
                        },
                    ).raise_for_status()
            if not sandbox.webhooks.wait_idle(timeout=600):
                raise RuntimeError("status webhooks still pending after 600 s")
            seconds = time.perf_counter() - started
            deliveries = sandbox.deliveries()
            attempts = sandbox.webhooks.attempts
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    expected = {(d.message_id, s) for d in deliveries if d.fate != "lost" for s in d.statuses}
    got = set(received)
    return {
        "sends": len(deliveries),
        "fates": dict(collections.Counter(d.fate for d in deliveries)),
        "final": dict(collections.Counter(d.final for d in deliveries)),
        "posts": len(attempts),
        "retries": sum(1 for a in attempts if a.attempt > 1),
        "duplicate_copies": sum(1 for a in attempts if a.copy > 1 and a.attempt == 1),
        "statuses_expected": len(expected),
        "statuses_received": len(got & expected),
        "missing": len(expected - got),
        "seconds": round(seconds, 2),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sends", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    figures = measure(args.sends, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "status_webhooks",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seed": args.seed,
        "results": figures,
    }
    (args.output / "status_webhooks.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.output / 'status_webhooks.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
