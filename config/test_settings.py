"""Settings for the test suite: its own embedded data dir and a fast password hasher."""

import os
from pathlib import Path

os.environ.setdefault(
    "HALLMARK_DATA_DIR", str(Path(__file__).resolve().parent.parent / ".hallmark-test")
)
os.environ.setdefault("HALLMARK_FAST_PASSWORD_HASHER", "true")
# The suite's upstream tests use the embedded OpenBao PKI as "embedded".
os.environ.setdefault("HALLMARK_EMBEDDED_UPSTREAM", "true")

from config.settings import *  # noqa: E402,F403
