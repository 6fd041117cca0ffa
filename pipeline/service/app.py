"""The service's HTTP face (Starlette): the webhook endpoint (its path from `[serve]
webhook_path`), `/healthz`, `/readyz` and `/metrics`. The body is read with a size limit and a
time limit before anything else; the signature check and the ledger write run in a worker
thread (they block), and the answer goes out only after the ledger has the work."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.service.receiver import Receiver
from pipeline.service_settings import ServeConfig


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused past `limit` bytes (announced or actually sent)."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(receiver: Receiver, settings: ServeConfig, *, ready: Callable[[], tuple[bool, dict]]) -> Starlette:
    """`ready()` says whether the service can take work (ledger reachable, worker running) and why."""
    metrics = receiver.metrics

    async def webhook(request: Request) -> Response:
        try:
            with anyio.fail_after(settings.request_timeout):
                body = await read_body(request, settings.max_body_bytes)
        except TooLarge:
            metrics.delivery("too_large")
            return JSONResponse({"success": False, "message": "body too large"}, status_code=413)
        except TimeoutError:
            metrics.delivery("timeout")
            return JSONResponse({"success": False, "message": "body not received in time"}, status_code=408)
        except ClientDisconnect:
            return Response(status_code=400)
        client = request.client.host if request.client else "unknown"
        answer = await run_in_threadpool(receiver.receive, request.headers, body, client)
        return JSONResponse(answer.body, status_code=answer.status)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, checks = await run_in_threadpool(ready)
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route(settings.webhook_path, webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ])
