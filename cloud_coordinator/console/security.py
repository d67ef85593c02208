"""The console's browser-facing protections: cookies, CSRF tokens and response headers.

- The session cookie holds the coordinator's session token (it is the secret that lets the
  console act for the account): ``__Host-`` prefixed, HttpOnly, Secure, SameSite=Strict.
- Each form carries a CSRF token: an HMAC of the session token under a key that lives only
  in this console process, compared in constant time. The login form (no session yet) uses a
  double-submit cookie of its own. Cross-site requests (``Sec-Fetch-Site: cross-site``) are
  refused before anything else.
- Every response carries a Content-Security-Policy that allows scripts, styles and requests
  from the console itself only: no inline script, no eval, no framing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "__Host-silolink-session"
LOGIN_COOKIE = "__Host-silolink-login"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class CsrfTokens:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def for_session(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def check(self, session: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.for_session(session), token)


def cookie_options(max_age: int | None) -> dict:
    return {"httponly": True, "secure": True, "samesite": "strict", "path": "/", "max_age": max_age}


class SecurityHeaders:
    """ASGI middleware adding the headers above to every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
