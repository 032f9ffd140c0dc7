"""`--help`, `presets` and an unknown preset must answer without loading torch/transformers (issue 12).

Checked by what the process imported (``sys.modules``), never by timing: timings belong in
``benchmarks/failfast.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "trl", "numpy", "pandas")

PROBE = """
import json, runpy, sys
sys.argv = ["rlhf_helpers"] + json.loads(sys.argv[1])
code = 0
try:
    runpy.run_module("rlhf_helpers", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def _run(args: list[str], env_preset: str | None = None) -> dict:
    import os

    env = dict(os.environ)
    if env_preset is not None:
        env["RLHF_PRESET"] = env_preset
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                         env=env, timeout=120)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stdout": out.stdout, "stderr": out.stderr}


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["build", "sft", "--preset", "nope"],
                                  ["report", "--preset", "nope"], ["run", "--preset", "nope"]])
def test_cli_answers_without_heavy_imports(args):
    r = _run(args)
    assert r["heavy"] == [], f"{args} imported {r['heavy']}"
    if "nope" in args:
        assert r["code"] == 2 and "Valid presets: tiny, smoke, gpt2" in r["stderr"]
    else:
        assert r["code"] in (0, None)


def test_unknown_preset_from_environment_fails_light():
    r = _run(["run"], env_preset="nope")
    assert r["code"] == 2 and "Unknown preset 'nope'" in r["stderr"]
    assert r["heavy"] == []


def test_package_and_config_import_light():
    code = ("import sys, rlhf_helpers, rlhf_helpers.config as c; c.get_preset('tiny'); "
            "print([m for m in %r if m in sys.modules])" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_seed_and_device_still_work():
    from rlhf_helpers.config import pick_device, set_seed

    set_seed(3)
    assert str(pick_device(verbose=False)) in ("cpu", "cuda", "mps")
