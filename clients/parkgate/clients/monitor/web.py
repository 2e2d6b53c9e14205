"""The wall screen's web app (Starlette): the page, its static files, and the snapshots as Server-Sent Events.

Routes::

    GET /                      the parks this monitor follows (one link each; a single park opens at once)
    GET /park/{park}           the wall screen of one park
    GET /events/{park}         text/event-stream: one JSON event per LiveFlow snapshot (and status change)
    GET /api/parks/{park}      the latest event as JSON (for scripts and health checks)
    GET /photos/{park}/{ref}   the photo of a member held for a check at the park's gates (S15), as JPEG
    POST /api/parks/{park}/checks/confirm   {"device_id", "request_id"}: GateControl.ConfirmCheck
    GET /static/...            monitor.js, monitor.css

Server-Sent Events rather than a WebSocket: the data flows one way, the
browser reconnects by itself, and any proxy passes plain HTTP.

The confirmation acts as the monitor's operator, so it is refused to other
sites' pages: it takes a JSON body (a cross-site form cannot send one without a
CORS preflight, which this app never grants) and an ``Origin``, when the
browser sends one, must be the page's own.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..connection import CallError
from .feed import MonitorFeed

#: Refusals the page shows as such (the operator lacks the permission), not as a broken monitor.
_STATUS = {"PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "SESSION_EXPIRED": 401}

STATIC = Path(__file__).parent / "static"


def create_app(feed: MonitorFeed, *, title: str = "parkgate live flow") -> Starlette:
    page_template = (STATIC / "index.html").read_text(encoding="utf-8")

    def _park(request: Request) -> str | None:
        park = str(request.path_params["park"])
        return park if park in feed.parks else None

    async def index(request: Request) -> Response:
        parks = sorted(feed.parks)
        if len(parks) == 1:
            return RedirectResponse(f"/park/{parks[0]}")
        links = "".join(f'<li><a href="/park/{html.escape(p)}">{html.escape(p)}</a></li>' for p in parks)
        return HTMLResponse(f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
                            f"<ul>{links}</ul>")

    async def page(request: Request) -> Response:
        park = _park(request)
        if park is None:
            return HTMLResponse("<h1>This monitor does not follow that park</h1>", status_code=404)
        return HTMLResponse(page_template.replace("{{park}}", html.escape(park)).replace("{{title}}",
                                                                                         html.escape(title)))

    async def events(request: Request) -> Response:
        park = _park(request)
        if park is None:
            return JSONResponse({"error": "UNKNOWN_PARK"}, status_code=404)

        async def stream() -> AsyncIterator[bytes]:
            async for message in feed.subscribe(park):
                yield b"data: " + message + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def latest(request: Request) -> Response:
        park = _park(request)
        if park is None:
            return JSONResponse({"error": "UNKNOWN_PARK"}, status_code=404)
        return JSONResponse(feed.snapshot(park))

    async def photo(request: Request) -> Response:
        park = _park(request)
        if park is None:
            return JSONResponse({"error": "UNKNOWN_PARK"}, status_code=404)
        try:
            jpeg = await feed.photo(park, str(request.path_params["ref"]))
        except CallError as exc:
            return JSONResponse({"error": str(exc)}, status_code=_STATUS.get(exc.reason, 502))
        if jpeg is None:
            return JSONResponse({"error": "no held check on this screen shows that photo"}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def confirm(request: Request) -> Response:
        park = _park(request)
        if park is None:
            return JSONResponse({"error": "UNKNOWN_PARK"}, status_code=404)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return JSONResponse({"error": "a confirmation from another site's page"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the confirmation as JSON"}, status_code=415)
        try:
            body = await request.json()
            device_id, request_id = str(body["device_id"]), str(body["request_id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {\"device_id\": ..., \"request_id\": ...}"}, status_code=400)
        try:
            return JSONResponse(await feed.confirm(park, device_id, request_id))
        except KeyError as exc:
            return JSONResponse({"error": str(exc.args[0])}, status_code=404)
        except CallError as exc:
            return JSONResponse({"error": str(exc)}, status_code=_STATUS.get(exc.reason, 502))

    return Starlette(routes=[
        Route("/", index),
        Route("/park/{park}", page),
        Route("/events/{park}", events),
        Route("/api/parks/{park}", latest),
        Route("/photos/{park}/{ref}", photo),
        Route("/api/parks/{park}/checks/confirm", confirm, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
