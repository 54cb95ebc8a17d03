"""Suite-wide settings.

``MIPHA_RAISE_INTERNAL_ERRORS=1``: a home agent engine that meets an internal error (a bug) while
carrying out an accepted request raises instead of answering 128, in this process and in every daemon
the tests start (they inherit the environment), so no test passes over a bug.

Hypothesis: no property test fails because generating its examples was slow (the too_slow health
check measures the box's load, not the code); every test already sets ``deadline=None``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

os.environ.setdefault("MIPHA_RAISE_INTERNAL_ERRORS", "1")
settings.register_profile("mipha", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("mipha")
