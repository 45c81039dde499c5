"""A support-desk intake service built on three promptcast tasks, called over HTTP.

`POST /inbox` with `{"message": "...", "customer_tier": "business"}`:

1. `translate` the message into English (and learn which language it was written in),
2. `extract_ticket` from the English text (issue, urgency, product),
3. `answer_product_question` from the help-centre articles below, when it can,

and answer `{"language", "ticket", "reply", "cost_usd"}`. Standard library only: a promptcast
service is HTTP and JSON, so this could be any language. Provider failures come back as RFC 9457
problem details; the client retries the ones marked retryable once, after their Retry-After.

Run (with `promptcast serve` running):

    PROMPTCAST_URL=http://127.0.0.1:8000 PROMPTCAST_TOKEN=… python support_desk.py --port 8080
    python support_desk.py --once "Der Mixer geht seit gestern nicht mehr an."
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HELP_CENTRE = {
    "kb-power": "If the Aero X2 does not turn on, check that the jar is locked onto the base; "
    "the safety switch cuts power when it is not.",
    "kb-ice": "The Aero X2 crushes ice with the Pulse setting; run it for at most 30 seconds.",
    "kb-warranty": "Every Aero blender has a two-year warranty from the date of purchase.",
}


class TaskCallError(Exception):
    """A task call that failed; `problem` is the server's RFC 9457 problem detail."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"HTTP {status}: {problem.get('detail', problem.get('title', ''))}")


class PromptcastClient:
    """Calls tasks on a promptcast server: `call("translate", {"text": …})` → the result JSON."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, task: str, inputs: dict[str, Any], *, request_id: str | None = None) -> Any:
        for attempt in (1, 2):
            try:
                return self._post(f"/v1/tasks/{task}", inputs, request_id)
            except TaskCallError as exc:
                if attempt == 2 or not exc.problem.get("retryable"):
                    raise
                time.sleep(min(float(exc.problem.get("retry_after", 1)), 10))
        raise AssertionError("unreachable")

    def _post(self, path: str, body: dict[str, Any], request_id: str | None) -> Any:
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if request_id:
            headers["x-request-id"] = request_id
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read())
            except ValueError:
                problem = {"title": exc.reason}
            raise TaskCallError(exc.code, problem) from None


def triage(
    client: PromptcastClient,
    message: str,
    customer_tier: str = "standard",
    request_id: str | None = None,
) -> dict[str, Any]:
    """Translate, extract a ticket, and draft a reply from the help centre."""
    translated = client.call("translate", {"text": message}, request_id=request_id)
    english = translated["output"]["translation"]
    ticket = client.call(
        "extract_ticket",
        {"message": english, "customer_tier": customer_tier},
        request_id=request_id,
    )
    reply = client.call(
        "answer_product_question",
        {"question": english, "documents": HELP_CENTRE},
        request_id=request_id,
    )
    costs = [r["usage"]["cost_usd"] for r in (translated, ticket, reply)]
    return {
        "language": translated["output"]["source_language"],
        "ticket": ticket["output"],
        "reply": reply["output"],
        "cost_usd": None if None in costs else round(sum(costs), 6),
    }


def make_server(client: PromptcastClient, host: str, port: int) -> ThreadingHTTPServer:
    """The intake service: `POST /inbox` → triage; errors from promptcast pass through."""

    class Inbox(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/inbox":
                return self._send(404, {"title": "Not Found"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                message = body["message"]
            except (ValueError, KeyError, TypeError):
                return self._send(400, {"title": "send {'message': '…'}"})
            try:
                result = triage(
                    client,
                    message,
                    body.get("customer_tier", "standard"),
                    self.headers.get("x-request-id"),
                )
            except TaskCallError as exc:
                return self._send(exc.status, exc.problem)
            self._send(200, result)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Inbox)


def main() -> None:
    parser = argparse.ArgumentParser(description="Support-desk intake on promptcast tasks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--once", metavar="MESSAGE", help="triage one message and exit")
    args = parser.parse_args()
    client = PromptcastClient(
        os.environ.get("PROMPTCAST_URL", "http://127.0.0.1:8000"),
        os.environ.get("PROMPTCAST_TOKEN"),
    )
    if args.once:
        print(json.dumps(triage(client, args.once), indent=2, ensure_ascii=False))
        return
    server = make_server(client, args.host, args.port)
    print(f"inbox on http://{args.host}:{server.server_address[1]}/inbox", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
