"""The console's web application (Starlette): login, sessions, CSRF, error pages, and the
glue that gives each request an admin-API client acting for its logged-in account.

Every page is rendered on the server (Jinja2, autoescaped); live values refresh through htmx
polling of HTML fragments, charts from small JSON endpoints. The console reaches the
coordinator only through the admin API (``OperatorClient`` with the console's certificate
and the account's session), so every per-RPC role check applies to it as to the CLI.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from silolink import errors

from ..accounts.client import AccountsClient
from ..operator_client import OperatorClient
from . import views
from .security import LOGIN_COOKIE, SESSION_COOKIE, CsrfTokens, SecurityHeaders, cookie_options

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_FORM_FIELD_CHARS = 4096


@dataclass
class Context:
    """One request's view of the coordinator: a client acting for the logged-in account."""

    request: Request
    client: OperatorClient
    session: str
    account: dict[str, Any]
    csrf: str

    @property
    def role(self) -> str:
        return self.account["role"]

    def can(self, role: str) -> bool:
        order = ["viewer", "operator", "admin"]
        return order.index(self.role) >= order.index(role)


class Console:
    """The web app. ``base`` is an OperatorClient holding the console's own certificate."""

    def __init__(
        self,
        base: OperatorClient,
        *,
        refresh_s: float = 2.0,
        stale_after_s: float = 45.0,
        session_max_s: float = 12 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base = base
        self.refresh_s = refresh_s
        self.stale_after_s = stale_after_s
        self.session_max_s = session_max_s
        self.clock = clock
        self.csrf = CsrfTokens()
        # The audit chain as far as this console has fetched it, and the verdict at its head.
        self.audit_lock = threading.Lock()
        self.audit_chain: tuple[list[Any], bytes] = ([], b"")
        self.audit_verified: tuple[int, dict[str, Any]] | None = None  # (head seq, result)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), auto_reload=False
        )
        self.env.globals.update(
            ago=lambda iso_ts: views.ago(views.epoch_of(iso_ts), clock()),
            refresh_s=refresh_s,
            query_text=views.query_text,
            refusing=views.refusing,
            planned_rounds=views.planned_rounds,
        )
        self.env.filters["qs"] = lambda params, **changes: urlencode({**params, **changes})
        self.env.filters["bytes"] = _human_bytes
        self.env.filters["utc"] = lambda ts: dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    # -- rendering -----------------------------------------------------------------------
    def render(self, template: str, ctx: Context | None, http_status: int = 200, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(ctx=ctx, **values)
        return HTMLResponse(html, status_code=http_status)

    def fail(self, request: Request, exc: errors.SiloError, ctx: Context | None = None) -> Response:
        """The response for an error from the coordinator (or from a form check)."""
        if isinstance(exc, errors.Unauthenticated):
            return self._to_login(request, "expired")
        status = {
            errors.PermissionDenied: 403,
            errors.NotFound: 404,
            errors.ResourceExhausted: 429,
            errors.Unavailable: 503,
            errors.DeadlineExceeded: 504,
            errors.Internal: 500,
        }.get(type(exc), 400)
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="error">{_escape(exc.message)}</p>', status_code=status)
        return self.render("error.html", ctx, http_status=status, status_code=status, message=exc.message)

    def _to_login(self, request: Request, reason: str) -> Response:
        target = "/login?" + urlencode({"reason": reason})
        if request.headers.get("hx-request"):
            response: Response = Response(status_code=200, headers={"HX-Redirect": target})
        else:
            response = RedirectResponse(target, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- request context -----------------------------------------------------------------
    def context(self, request: Request) -> Context:
        session = request.cookies.get(SESSION_COOKIE, "")
        if not session:
            raise errors.Unauthenticated("log in first")
        client = self.base.acting_for(session)
        account = AccountsClient(client).whoami()
        return Context(request, client, session, account, self.csrf.for_session(session))

    def page(self, handler: Callable[[Context], Response]) -> Callable[[Request], Response]:
        """A GET handler that needs a logged-in account (sync: Starlette runs it on a thread)."""

        @functools.wraps(handler)
        def endpoint(request: Request) -> Response:
            ctx = None
            try:
                ctx = self.context(request)
                return handler(ctx)
            except errors.SiloError as exc:
                return self.fail(request, exc, ctx)

        return endpoint

    def action(self, handler: Callable[[Context, dict[str, str]], Response]) -> Callable:
        """A POST handler: same-site only, CSRF token checked before anything is called."""

        async def endpoint(request: Request) -> Response:
            if request.headers.get("sec-fetch-site") == "cross-site":
                return PlainTextResponse("cross-site requests are refused", status_code=403)
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            if any(len(v) > MAX_FORM_FIELD_CHARS for v in form.values()):
                return PlainTextResponse("a form field is too long", status_code=413)
            session = request.cookies.get(SESSION_COOKIE, "")
            if not session:
                return self._to_login(request, "expired")
            if not self.csrf.check(session, form.get("csrf", "")):
                log.warning("console: a form with a missing or wrong CSRF token was refused")
                return PlainTextResponse("the form's CSRF token is missing or wrong; reload the page", status_code=403)
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self._run_action, handler, request, form)

        functools.update_wrapper(endpoint, handler)
        return endpoint

    def _run_action(self, handler, request: Request, form: dict[str, str]) -> Response:
        ctx = None
        try:
            ctx = self.context(request)
            return handler(ctx, form)
        except errors.SiloError as exc:
            return self.fail(request, exc, ctx)

    # -- login ---------------------------------------------------------------------------
    def login_form(self, request: Request) -> Response:
        import secrets

        token = secrets.token_urlsafe(24)
        reason = {"expired": "Your session has ended; log in again.", "logout": "You are logged out."}.get(
            request.query_params.get("reason", ""), ""
        )
        response = self.render("login.html", None, login_csrf=token, notice=reason)
        response.set_cookie(LOGIN_COOKIE, token, **cookie_options(600))
        return response

    async def login(self, request: Request) -> Response:
        if request.headers.get("sec-fetch-site") == "cross-site":
            return PlainTextResponse("cross-site requests are refused", status_code=403)
        form = await request.form()
        expected = request.cookies.get(LOGIN_COOKIE, "")
        given = str(form.get("csrf", ""))
        if not expected or not self.csrf_equal(expected, given):
            return PlainTextResponse(
                "the login form's CSRF token is missing or wrong; reload the page", status_code=403
            )
        name, password, code = (str(form.get(k, ""))[:MAX_FORM_FIELD_CHARS] for k in ("name", "password", "totp"))
        address = request.client.host if request.client else ""
        from starlette.concurrency import run_in_threadpool

        try:
            opened = await run_in_threadpool(AccountsClient(self.base).login, name, password, code, address)
        except errors.SiloError as exc:
            status = 429 if isinstance(exc, errors.ResourceExhausted) else 401
            log.info("console login for %r from %s refused: %s", name, address, exc.message)
            response = self.render(
                "login.html", None, http_status=status, login_csrf=expected, error=exc.message, name=name
            )
            return response
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, opened["session"], **cookie_options(int(self.session_max_s)))
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    @staticmethod
    def csrf_equal(a: str, b: str) -> bool:
        import hmac

        return hmac.compare_digest(a.encode(), b.encode())

    def logout(self, ctx: Context, form: dict[str, str]) -> Response:
        AccountsClient(self.base).logout(ctx.session)
        response = RedirectResponse("/login?reason=logout", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- assembly ------------------------------------------------------------------------
    def build(self) -> Any:
        from .pages import routes

        app = Starlette(
            routes=[
                Route("/login", self.login_form, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.action(self.logout), methods=["POST"]),
                Route("/api/health", lambda request: JSONResponse({"ok": True})),
                *routes(self),
                Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
            ],
        )
        return SecurityHeaders(app)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _human_bytes(value: float | int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
