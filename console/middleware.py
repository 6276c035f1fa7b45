"""Security headers on every answer: a strict Content-Security-Policy and no framing.

The pages load scripts and styles from Hallmark's own origin only (htmx is vendored under
static/), with no inline script or style, so the policy needs no 'unsafe-inline' and no nonce.
The API's JSON answers get the same headers; they cost nothing there.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from config.securityheaders import CONTENT_SECURITY_POLICY


class SecurityHeadersMiddleware:
    """Content-Security-Policy and X-Frame-Options DENY. (nosniff and the same-origin referrer
    policy come from Django's SecurityMiddleware, which wraps this one, by its defaults.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response
