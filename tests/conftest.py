"""Suite-wide settings.

``MIPHA_RAISE_INTERNAL_ERRORS=1``: a home agent engine that meets an internal error (a bug) while
carrying out an accepted request raises instead of answering 128, in this process and in every daemon
the tests start (they inherit the environment), so no test passes over a bug.
"""

from __future__ import annotations

import os

os.environ.setdefault("MIPHA_RAISE_INTERNAL_ERRORS", "1")
