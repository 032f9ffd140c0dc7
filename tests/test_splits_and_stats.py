"""Three review splits with one role each, a tuning guard that keeps the test set and the auditor out of every
choice, and the error bars every reported rate carries."""
from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TUNING_SCRIPTS = ["ppo_tuning.py", "dpo_tuning.py", "dpo_rounds.py", "writer_trials.py", "online_tuning.py",
                  "classifier_trials.py", "sft_shapes.py", "validation_table.py", "overopt_trials.py"]


def test_three_splits_share_no_review():
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.data import load_imdb

    ds = load_imdb(get_preset("smoke"))
    train, val, test = (set(ds[s]["text"]) for s in ("train", "validation", "test"))
    assert len(val) == get_preset("smoke").validation_reviews
    assert not train & val and not train & test and not val & test


def test_validation_and_test_prompts_differ():
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.evaluate import heldout_prompt_table
    from rlhf_helpers.sft import ensure_tokenizer

    preset = get_preset("smoke")
    tok = ensure_tokenizer(preset)
    val = heldout_prompt_table(preset, tok, 12, split="validation")
    test = heldout_prompt_table(preset, tok, 12, split="test")
    assert list(val["prompt"]) != list(test["prompt"])
    with pytest.raises(ValueError, match="validation"):
        heldout_prompt_table(preset, tok, 12, split="train")


def _in_a_tuning_process(code: str) -> subprocess.CompletedProcess:
    prog = "from rlhf_helpers.data import forbid_test_set\nforbid_test_set()\n" + code
    return subprocess.run([sys.executable, "-c", prog], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_tuning_process_cannot_read_the_test_prompts_or_the_auditor():
    done = _in_a_tuning_process(
        "from rlhf_helpers.config import get_preset\n"
        "from rlhf_helpers.data import load_imdb, TestSetForbiddenError\n"
        "from rlhf_helpers.evaluate import heldout_prompt_table\n"
        "from rlhf_helpers.auditor import load_auditor\n"
        "from rlhf_helpers.sft import ensure_tokenizer\n"
        "p = get_preset('smoke')\n"
        "assert 'test' not in load_imdb(p) and 'validation' in load_imdb(p)\n"
        "tok = ensure_tokenizer(p)\n"
        "heldout_prompt_table(p, tok, 4, split='validation')\n"
        "for f in (lambda: heldout_prompt_table(p, tok, 4), lambda: load_auditor(p)):\n"
        "    try:\n"
        "        f()\n"
        "    except TestSetForbiddenError as err:\n"
        "        print('refused:', err)\n"
        "    else:\n"
        "        raise SystemExit('a tuning process read the test set or the auditor')\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused:") == 2 and "validation" in done.stdout


@pytest.mark.parametrize("script", TUNING_SCRIPTS)
def test_every_tuning_script_forbids_the_test_set_before_it_chooses(script):
    """Each tuning script calls forbid_test_set() in main() before any other rlhf_helpers import, asks for the
    validation prompts, and never names the auditor."""
    source = (ROOT / "benchmarks" / script).read_text()
    tree = ast.parse(source)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [n for n in ast.walk(main) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "forbid_test_set"]
    assert calls, f"{script}: main() must call forbid_test_set()"
    first_guard = min(c.lineno for c in calls)
    other_imports = [n.lineno for n in ast.walk(main) if isinstance(n, ast.ImportFrom)
                     and (n.module or "").startswith("rlhf_helpers") and n.module != "rlhf_helpers.data"]
    assert all(line > first_guard for line in other_imports), f"{script}: rlhf_helpers imported before the guard"
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    auditor_names = {"second_judge_reward", "ensure_second_judge", "train_second_judge", "BagOfWordsSentiment",
                     "auditor", "load_auditor", "ensure_auditor", "train_auditor"}
    assert not auditor_names & names, \
        f"{script} reads the auditor"
    assert not [k for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "judges"], \
        f"{script} grades with the auditor"
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") in ("heldout_prompt_table", "heldout_prompts"):
            assert any(k.arg == "split" and getattr(k.value, "value", None) == "validation" for k in call.keywords), \
                f"{script}: line {call.lineno} must ask for split='validation'"


def test_wilson_interval_known_values():
    from rlhf_helpers.stats import wilson_interval

    lo, hi = wilson_interval(320, 640)
    assert math.isclose(lo, 0.4614, abs_tol=1e-3) and math.isclose(hi, 0.5386, abs_tol=1e-3)
    assert (hi - lo) / 2 < 0.04  # the test set is large enough for ±4 points near 50 %
    lo0, hi0 = wilson_interval(0, 20)
    assert lo0 == 0.0 and 0.15 < hi0 < 0.17  # never below 0, unlike p ± 1.96 sqrt(p(1-p)/n)


def test_paired_difference_sees_what_unpaired_misses():
    """Two methods that differ on 5 % of prompts, always in the same direction: the paired interval excludes 0
    and McNemar agrees; swapping which is which flips the sign."""
    from rlhf_helpers.stats import mcnemar_p, paired_difference, wilson_interval

    rng = np.random.default_rng(0)
    base = rng.random(640) < 0.5
    better = base.copy()
    better[np.flatnonzero(~base)[:30]] = True
    d, lo, hi = paired_difference(better.astype(float), base.astype(float))
    assert lo > 0 and math.isclose(d, 30 / 640)
    assert mcnemar_p(better, base) < 1e-6
    # unpaired, the two Wilson intervals overlap: the gap would be called noise
    assert wilson_interval(better.sum(), 640)[0] < wilson_interval(base.sum(), 640)[1]
    d2, lo2, hi2 = paired_difference(base.astype(float), better.astype(float))
    assert hi2 < 0 and math.isclose(d2, -d)
    assert mcnemar_p(base, base) == 1.0


def test_bootstrap_interval_covers_the_mean():
    from rlhf_helpers.stats import bootstrap_interval

    x = np.random.default_rng(1).normal(2.0, 1.0, 400)
    lo, hi = bootstrap_interval(x)
    assert lo < x.mean() < hi and 0.15 < hi - lo < 0.25  # about 2 * 1.96 / sqrt(400)
