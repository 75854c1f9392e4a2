"""The `ganomaly` command sets a short OpenMP spin before torch starts, unless the user chose
how OpenMP threads wait; importing the library sets nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

NAMES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# The console script's function, with `main` replaced by a probe: what does the command's
# process look like at the moment the command starts?
COMMAND_PROBE = f"""
import json, os, sys
import ganomaly.cli as cli
def probe(argv=None):
    print(json.dumps({{"torch_imported": "torch" in sys.modules,
                      **{{n: os.environ.get(n) for n in {NAMES!r}}}}}))
    return 0
cli.main = probe
cli.entry_point()
"""
IMPORT_PROBE = f"""
import json, os, ganomaly, ganomaly.cli
print(json.dumps({{"torch_imported": False, **{{n: os.environ.get(n) for n in {NAMES!r}}}}}))
"""


def environment(probe: str, **given: str) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    env.update(given)
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_the_command_sets_a_short_spin_then_sleep_before_torch_starts():
    assert environment(COMMAND_PROBE) == {
        "torch_imported": False, "OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "3000",
        "KMP_BLOCKTIME": "0",
    }  # fmt: skip


def test_importing_the_library_sets_nothing():
    assert environment(IMPORT_PROBE) == {"torch_imported": False, **dict.fromkeys(NAMES)}


@pytest.mark.parametrize("name", NAMES)
def test_a_users_choice_wins(name):
    value = "PASSIVE" if name == "OMP_WAIT_POLICY" else "7"
    after = environment(COMMAND_PROBE, **{name: value})
    assert after == {"torch_imported": False, **{n: (value if n == name else None) for n in NAMES}}
