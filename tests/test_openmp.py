import os
import subprocess
import sys
from pathlib import Path

import pytest

from pillargraph.openmp import WAIT_VARIABLES

REPO = Path(__file__).resolve().parents[1]


def policy_after(code, **env):
    base = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    base["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("code, env, expected", [
    ("import pillargraph", {}, "PASSIVE"),                               # before torch: passive
    ("import pillargraph", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),     # the user's choice stays
    ("import pillargraph", {"GOMP_SPINCOUNT": "1000"}, "None"),          # so does a spin count
    ("import torch; import pillargraph", {}, "None"),                    # too late to matter: untouched
])
def test_import_prefers_passive_waiting_only_when_it_can_matter(code, env, expected):
    assert policy_after(code, **env) == expected
