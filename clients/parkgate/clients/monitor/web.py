"""The wall screen's web app (Starlette): the page, its static files, and the snapshots as Server-Sent Events.

Routes::

    GET /                      the parks this monitor follows (one link each; a single park opens at once)
    GET /park/{park}           the wall screen of one park
    GET /events/{park}         text/event-stream: one JSON event per LiveFlow snapshot (and status change)
    GET /api/parks/{park}      the latest event as JSON (for scripts and health checks)
    GET /static/...            monitor.js, monitor.css

Server-Sent Events rather than a WebSocket: the data flows one way, the
browser reconnects by itself, and any proxy passes plain HTTP.
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

from .feed import MonitorFeed

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

    return Starlette(routes=[
        Route("/", index),
        Route("/park/{park}", page),
        Route("/events/{park}", events),
        Route("/api/parks/{park}", latest),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
