"""`import ganomaly` sets a short OpenMP spin unless the user chose how OpenMP threads wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

NAMES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
PROBE = f"import os, json, ganomaly; print(json.dumps({{n: os.environ.get(n) for n in {NAMES!r}}}))"


def environment_after_import(**given: str) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    env.update(given)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_default_is_a_short_spin_then_sleep():
    assert environment_after_import() == {
        "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_a_users_choice_wins(name):
    value = "PASSIVE" if name == "OMP_WAIT_POLICY" else "7"
    after = environment_after_import(**{name: value})
    assert after == {n: (value if n == name else None) for n in NAMES}
