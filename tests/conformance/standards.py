"""Where the SPIFFE standards are read from: the team's shared copy, else the vendored one.

`../shared/reference/spiffe-standards/` is the law when it sits beside the checkout (as in
CI); a fresh clone elsewhere uses the copy in `tests/conformance/standards/` (Apache-2.0,
see its LICENSE), which test_vendored_standards_match_the_shared_copy keeps identical.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "reference" / "spiffe-standards"
VENDORED = Path(__file__).resolve().parent / "standards"
STANDARDS = SHARED if SHARED.is_dir() else VENDORED
