"""Services the serving tests need besides Python: found, or skipped with a reason.

`make test` installs them where it may (scripts/test-services.sh). With
REJOINDER_REQUIRE_SERVICES=1 (as CI sets it) a missing one fails the test instead.
"""

from __future__ import annotations

import glob
import os

import pytest


def need(found, what: str, how: str):
    if found:
        return found
    message = f"{what} is not installed ({how})"
    if os.environ.get("REJOINDER_REQUIRE_SERVICES"):
        pytest.fail(message + "; REJOINDER_REQUIRE_SERVICES is set")
    pytest.skip(message)


def postgres_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(need(found, "PostgreSQL", "bash scripts/test-services.sh")[-1])
