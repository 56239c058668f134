"""Where things are, for tests in any folder of the mirror: the repository, its sources, the test fixtures."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
REPO = SUPPORT.parents[1]
SRC = REPO / "src"
FIXTURES = REPO / "tests" / "fixtures"
