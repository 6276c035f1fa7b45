"""The Content-Security-Policy every answer carries (the console's middleware sets it, and so
does the web tier's early refusal path, tenants.edgerefusals): one definition for both.

The pages load scripts and styles from Hallmark's own origin only (htmx is vendored under
static/), with no inline script or style, so the policy needs no 'unsafe-inline' and no nonce.
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)
