"""Settings for the test suite: its own embedded data dir and a fast password hasher."""

import os
from pathlib import Path

os.environ.setdefault(
    "HALLMARK_DATA_DIR", str(Path(__file__).resolve().parent.parent / ".hallmark-test")
)
os.environ.setdefault("HALLMARK_FAST_PASSWORD_HASHER", "true")
# The suite (and the `hallmark up` of its e2e tests, which inherits this environment) signs up
# many tenants from 127.0.0.1; the rate-limit tests lower the limits for their own clients.
os.environ.setdefault("HALLMARK_SIGNUP_RATE_LIMIT", "100000/60")
os.environ.setdefault("HALLMARK_LOGIN_RATE_LIMIT", "100000/60")

from config.settings import *  # noqa: E402,F403
