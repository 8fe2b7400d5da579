"""The Starlette application: search, the contact card with its tabs, analytics.

Why it is built this way:

- Server-rendered Jinja2 with autoescaping, and a Content-Security-Policy that allows no
  script at all and only the page's own style sheet: customer data (a name such as
  ``<script>...``) is always text, and even a template mistake could not run a script.
- Each request reads the snapshot the daily job published (:mod:`tessera.web.snapshot`),
  never the warehouse file, so it neither blocks nor waits for the single writer; only a
  warehouse with no published snapshot yet is read directly (and answers 503 while a run
  writes).
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

from tessera.engine import Engine, WarehouseUnavailable
from tessera.web import queries, snapshot

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
    """The app over the warehouse file at ``warehouse``: it reads the snapshot the daily
    job publishes (:mod:`tessera.web.snapshot`), or the warehouse itself, read-only,
    where none was published yet."""
    env = _templates()
    warehouse = Path(warehouse)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def missing(what: str, message: str) -> HTMLResponse:
        return page("message.html", 404, title=f"No such {what}", message=message)

    def reading(build: Callable[[Engine], Response]) -> Response:
        """``build``'s page from one short read session, or 503 when there is none."""
        try:
            with snapshot.reader(warehouse) as engine:
                return build(engine)
        except WarehouseUnavailable as exc:
            return page("message.html", 503, title="Warehouse not available", message=str(exc))

    # A published folder never changes: what is the same for every request on it (the
    # filters' values, the analytics counts) is computed once per folder. Cached only when
    # the folder named before the read is still the current one after it, so a publication
    # in between cannot file one folder's numbers under the next one's name.
    cache: dict[tuple, Any] = {}

    def once_per_folder(key: tuple, before: Path | None, compute: Callable[[], Any]) -> Any:
        if before is None:
            return compute()
        full = (str(before),) + key
        if full not in cache:
            value = compute()
            if snapshot.current(warehouse) != before:
                return value
            if len(cache) > 32:
                cache.clear()
            cache[full] = value
        return cache[full]

    def filter_options(engine: Engine, view: str | None, before: Path | None) -> dict:
        return once_per_folder(("filters", view), before, lambda: queries.filter_options(engine, view))

    def registry_page(registry: queries.Registry):
        def handler(request: Request) -> Response:
            params = request.query_params
            q = params.get("q", "").strip()[:200]
            letter = params.get("letter", "").strip()[:1]
            if not registry.filters:
                keys = {f.key for f in queries.REGISTRY_FILTERS.get(registry.path, ())}
                chosen = {k: params.get(f"f_{k}", "").strip()[:200] for k in keys
                          if params.get(f"f_{k}", "").strip()}
                before = snapshot.current(warehouse)

                def build_registry(engine: Engine) -> Response:
                    fields = queries.registry_filters(engine, registry.path)
                    return page(
                        "registry.html", registry=registry, q=q, letter=letter,
                        table=registry.read(engine, q, letter, filters=chosen),
                        letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ", limit=queries.SEARCH_LIMIT, chosen=chosen,
                        filters=[(f.key, f.label, f.mode) for f in fields],
                        options=once_per_folder(("registry", registry.path), before,
                                                lambda: queries.registry_filter_options(engine, registry.path)),
                        keep=_keep_query(q, "", chosen))
                return reading(build_registry)
            chosen = {k: params.get(f"f_{k}", "").strip()[:200] for k in queries.FILTER_KEYS
                      if params.get(f"f_{k}", "").strip()}
            before = snapshot.current(warehouse)

            def build(engine: Engine) -> Response:
                views = queries.views(engine)
                view = params.get("view", "")
                view = view if view in views else ""
                return page("registry.html", registry=registry, q=q, letter=letter,
                            table=registry.read(engine, q, letter, filters=chosen, view=view or None),
                            letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ", limit=queries.SEARCH_LIMIT,
                            views=views, view=view, chosen=chosen,
                            filters=queries.available_filters(engine, view or None),
                            options=filter_options(engine, view or None, before),
                            keep=_keep_query(q, view, chosen))
            return reading(build)
        return handler

    no_card = "No contact card with this id (never built, erased or deleted)."

    def contact(request: Request) -> Response:
        customer_id = request.path_params["customer_id"]
        if customer_id >= 2**63:  # not a BIGINT: no such customer
            return missing("contact", no_card)
        tab = request.query_params.get("tab", "profile")
        tab = tab if tab in queries.TAB_KEYS else "profile"
        wanted = request.query_params.get("view", "")

        def build(engine: Engine) -> Response:
            views = queries.views(engine)
            view = wanted if wanted in views else ""
            row = queries.card(engine, customer_id, view or None)
            if row is None:
                return missing("contact", no_card + (" It has no record under this view."
                                                     if view else ""))
            return page("card.html", row=row, tab=tab, tabs=queries.TABS, views=views, view=view,
                        tables=queries.card_tab(engine, tab, row, view or None))
        return reading(build)

    def company(request: Request) -> Response:
        company_id = request.path_params["company_id"]

        def build(engine: Engine) -> Response:
            row, tables = queries.company(engine, company_id) if company_id < 2**63 else (None, [])
            if row is None:
                return missing("company", "No company with this id.")
            return page("company.html", row=row, tables=tables)
        return reading(build)

    def analytics(request: Request) -> Response:
        # counts over the whole base (ROAS joins every order to every e-mail click), the
        # same for every request on one published folder
        before = snapshot.current(warehouse)
        return reading(lambda engine: page("analytics.html", **once_per_folder(
            ("analytics",), before, lambda: queries.analytics(engine))))

    def not_found(request: Request, exc: Exception) -> HTMLResponse:
        return page("message.html", 404, title="Not found", message="There is no such page.")

    routes = [Route(r.path, registry_page(r)) for r in queries.REGISTRIES] + [
        Route("/card/{customer_id:int}", contact),
        Route("/company/{company_id:int}", company),
        Route("/analytics", analytics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    def failure() -> HTMLResponse:
        return page("message.html", 500, title="Something went wrong",
                    message="The page could not be built; the server log names the error's kind.")

    return Starlette(routes=routes, middleware=[Middleware(_Guard, token=token, failure=failure)],
                     exception_handlers={404: not_found})


def _keep_query(q: str, view: str, chosen: dict[str, str]) -> str:
    """The search's other parameters, for the initial-letter links (URL-encoded)."""
    from urllib.parse import urlencode

    pairs = [("q", q)] if q else []
    pairs += [("view", view)] if view else []
    pairs += [(f"f_{k}", v) for k, v in sorted(chosen.items())]
    return urlencode(pairs)


def render_report(data: dict[str, Any]) -> str:
    """The analytics page as one self-contained HTML file (style inlined, no links to
    the server): the daily run's report for analysts without the server."""
    return _templates().get_template("analytics.html").render(
        inline_css=(HERE / "static" / "tessera.css").read_text(encoding="utf-8"), report=True, **data)


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
