"""Security headers on every HTTP response: a strict CSP, no framing, no sniffing, no referrer."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from agent_pm.api._http_middleware import HttpMiddleware

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeadersMiddleware"]

# No inline scripts or styles anywhere: every script and stylesheet is a file under /static.
# 'self' in connect-src covers the same-origin ws:/wss: live channel. The referrer policy is
# same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on form posts,
# which would defeat the dashboard's same-origin check.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware(HttpMiddleware):
    """Adds :data:`HEADERS` to HTTP responses that do not set them already."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
