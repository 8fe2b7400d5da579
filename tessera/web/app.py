"""The Starlette application: search, the contact card with its tabs, analytics.

Why it is built this way:

- Server-rendered Jinja2 with autoescaping, and a Content-Security-Policy that allows no
  script at all and only the page's own style sheet: customer data (a name such as
  ``<script>...``) is always text, and even a template mistake could not run a script.
- One short read-only warehouse session per request (:func:`tessera.engine.read_only`):
  the page never blocks the daily job's single writer, and answers 503 while it writes.
- No personal data in logs: uvicorn's access log (which prints the query string, so a
  searched name or e-mail) is off; this module logs method, route, status and time only.
- Anything but a loopback address needs a token (HTTP Basic, any user name, the token as
  password), checked in constant time.
"""

from __future__ import annotations

import hmac
import logging
import time
from base64 import b64decode
from pathlib import Path
from typing import Any, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tessera.engine import WarehouseUnavailable, read_only
from tessera.web import queries

HERE = Path(__file__).resolve().parent
LOG = logging.getLogger("tessera.web")

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["show"] = queries.show
    return env


class _Guard(BaseHTTPMiddleware):
    """Security headers on every answer, the optional token, and a log line with no data."""

    def __init__(self, app, token: str | None, failure: Callable[[], Response]) -> None:
        super().__init__(app)
        self.token = token
        self.failure = failure

    def _authorised(self, request: Request) -> bool:
        if not self.token:
            return True
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            _user, _, password = b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next) -> Response:
        start = time.perf_counter()
        if self._authorised(request):
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - the page answers 500 either way
                # the error's text and traceback may quote warehouse values: log its kind
                # and the route only, and keep it from the server's own traceback log
                LOG.error("%s failed: %s", getattr(request.scope.get("route"), "path", "-"),
                          type(exc).__name__)
                response = self.failure()
        else:
            response = PlainTextResponse("sign in: the token is the password", status_code=401,
                                         headers={"WWW-Authenticate": 'Basic realm="tessera"'})
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        route = request.scope.get("route")
        LOG.info("%s %s %s %.0f ms", request.method, getattr(route, "path", "-"),
                 response.status_code, (time.perf_counter() - start) * 1000)
        return response


def create_app(warehouse: str | Path, token: str | None = None) -> Starlette:
    """The app over the warehouse file at ``warehouse`` (opened read-only per request)."""
    env = _templates()
    warehouse = Path(warehouse)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def unavailable(exc: WarehouseUnavailable) -> HTMLResponse:
        return page("message.html", 503, title="Warehouse not available", message=str(exc))

    def home(request: Request) -> HTMLResponse:
        q = request.query_params.get("q", "").strip()[:200]
        letter = request.query_params.get("letter", "").strip()[:1]
        try:
            with read_only(warehouse) as engine:
                table = queries.search(engine, q, letter)
        except WarehouseUnavailable as exc:
            return unavailable(exc)
        return page("search.html", q=q, letter=letter, table=table,
                    letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ", limit=queries.SEARCH_LIMIT)

    def contact(request: Request) -> HTMLResponse:
        customer_id = request.path_params["customer_id"]
        if customer_id >= 2**63:  # not a BIGINT: no such customer
            return page("message.html", 404, title="No such contact",
                        message="No contact card with this id (never built, erased or deleted).")
        tab = request.query_params.get("tab", "profile")
        if tab not in queries.TAB_KEYS:
            tab = "profile"
        try:
            with read_only(warehouse) as engine:
                row = queries.card(engine, customer_id)
                tables = queries.card_tab(engine, tab, row) if row else []
        except WarehouseUnavailable as exc:
            return unavailable(exc)
        if row is None:
            return page("message.html", 404, title="No such contact",
                        message="No contact card with this id (never built, erased or deleted).")
        return page("card.html", row=row, tab=tab, tabs=queries.TABS, tables=tables)

    def companies(request: Request) -> HTMLResponse:
        q = request.query_params.get("q", "").strip()[:200]
        letter = request.query_params.get("letter", "").strip()[:1]
        try:
            with read_only(warehouse) as engine:
                table = queries.companies_search(engine, q, letter)
        except WarehouseUnavailable as exc:
            return unavailable(exc)
        return page("companies.html", q=q, letter=letter, table=table,
                    letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ", limit=queries.SEARCH_LIMIT)

    def company(request: Request) -> HTMLResponse:
        company_id = request.path_params["company_id"]
        try:
            with read_only(warehouse) as engine:
                row, tables = queries.company(engine, company_id) if company_id < 2**63 else (None, [])
        except WarehouseUnavailable as exc:
            return unavailable(exc)
        if row is None:
            return page("message.html", 404, title="No such company", message="No company with this id.")
        return page("company.html", row=row, tables=tables)

    def analytics(request: Request) -> HTMLResponse:
        try:
            with read_only(warehouse) as engine:
                data = queries.analytics(engine)
        except WarehouseUnavailable as exc:
            return unavailable(exc)
        return page("analytics.html", **data)

    def not_found(request: Request, exc: Exception) -> HTMLResponse:
        return page("message.html", 404, title="Not found", message="There is no such page.")

    routes = [
        Route("/", home),
        Route("/card/{customer_id:int}", contact),
        Route("/companies", companies),
        Route("/company/{company_id:int}", company),
        Route("/analytics", analytics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    def failure() -> HTMLResponse:
        return page("message.html", 500, title="Something went wrong",
                    message="The page could not be built; the server log names the error's kind.")

    return Starlette(routes=routes, middleware=[Middleware(_Guard, token=token, failure=failure)],
                     exception_handlers={404: not_found})


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def serve(warehouse: str | Path, host: str = "127.0.0.1", port: int = 8080,
          token: str | None = None) -> None:
    """Run the app with uvicorn until interrupted. Off the loopback address a token is
    required, since the page shows personal data."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ValueError(f"serving on {host} shows personal data to the network: set a token "
                         "(TESSERA_WEB_TOKEN) or bind to 127.0.0.1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(warehouse, token), host=host, port=port, access_log=False,
                log_level="info", server_header=False)
