"""Two notebooks at a time (`make run`): a stage is built once however many processes ask for it, and the
evaluation kept between notebooks gives exactly the numbers a fresh evaluation gives."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import ensure, save_artifact

    preset = get_preset("smoke")
    log = Path(sys.argv[1])

    def build():
        with log.open("a") as f:
            f.write("built\\n")
        time.sleep(3)  # long enough for the other process to arrive while this one builds
        return save_artifact(preset, "lock_demo", lambda tmp: (tmp.mkdir(), (tmp / "w.txt").write_text("x")), {})

    print(ensure(preset, "lock_demo", build))
""")


def test_two_processes_asking_for_one_stage_build_it_once(tmp_path):
    """Without the stage lock both processes build (and the second's clean-up can delete the first's save)."""
    log = tmp_path / "builds.log"
    env = {**os.environ, "RLHF_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(log)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert log.read_text().count("built") == 1, "the stage was built by both processes"
    folders = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(folders) == 1 and (Path(folders.pop()) / "w.txt").read_text() == "x"
    assert "waiting for it to finish" in "".join(o[0] for o in outs)


def test_a_stage_lock_is_released_when_its_build_fails(tmp_path, monkeypatch):
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import ensure, save_artifact

    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")

    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        ensure(preset, "lock_demo", broken)
    folder = ensure(preset, "lock_demo", lambda: save_artifact(
        preset, "lock_demo", lambda tmp: (tmp.mkdir(), (tmp / "w.txt").write_text("y")), {}))
    assert (folder / "w.txt").read_text() == "y"


def test_kept_evaluations_equal_fresh_ones_and_follow_the_policy(stand_in_lm_dir, tmp_path, monkeypatch):
    import shutil

    import torch

    from rlhf_helpers import evaluate
    from rlhf_helpers.config import get_preset

    monkeypatch.setenv("RLHF_HOME", str(tmp_path / "home"))
    preset = get_preset("smoke")
    policy = tmp_path / "policy"
    shutil.copytree(stand_in_lm_dir, policy)

    from rlhf_helpers.auditor import BagOfWordsSentiment

    scorer = BagOfWordsSentiment(["great", "boring", "the"], torch.tensor([2.0, -1.5, 0.5]), 0.25)
    prompts = ["This movie was", "A waste of", "I loved the", "The plot"] * 4
    args = (scorer, stand_in_lm_dir, prompts, 2, 5)
    monkeypatch.setenv("RLHF_EVAL_CACHE", "0")
    fresh, fresh_samples = evaluate.evaluate_policies({"p": policy}, *args, seed=3, preset=preset)
    assert not (tmp_path / "home" / "smoke" / "evaluations").exists()
    monkeypatch.setenv("RLHF_EVAL_CACHE", "1")
    first, _ = evaluate.evaluate_policies({"p": policy}, *args, seed=3, preset=preset)
    kept = list((tmp_path / "home" / "smoke" / "evaluations").glob("*.json"))
    assert len(kept) == 1 and len(json.loads(kept[0].read_text())["texts"]) == len(prompts)

    calls = []
    real = evaluate.generate_responses
    monkeypatch.setattr(evaluate, "generate_responses", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, again_samples = evaluate.evaluate_policies({"p": policy}, *args, seed=3, preset=preset)
    assert calls == [], "the kept evaluation was sampled again"
    for table in (first, again):
        assert table.equals(fresh)
    assert again_samples.equals(fresh_samples)

    evaluate.evaluate_policies({"p": policy}, *args, seed=4, preset=preset)  # another seed: sampled
    assert calls == [1]
    from safetensors.torch import load_file, save_file

    weights = load_file(policy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.5
    save_file(weights, policy / "model.safetensors", metadata={"format": "pt"})
    changed, _ = evaluate.evaluate_policies({"p": policy}, *args, seed=3, preset=preset)
    assert calls == [1, 1], "a policy whose weights changed was read from the kept evaluation"
    assert not np.isclose(changed.loc["p", "kl"], fresh.loc["p", "kl"])


def test_a_later_notebook_kernel_gets_a_lower_priority():
    from rlhf_helpers.notebooks import NICE_STEP, lower_priority

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
        lower_priority(child.pid, NICE_STEP * 6)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 18
        lower_priority(child.pid, 0)  # 0: left as it is
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 18
    finally:
        child.kill()
        child.wait()


def test_a_folder_where_no_lock_can_be_written_still_loads_and_evaluates(stand_in_lm_dir, tmp_path, monkeypatch):
    """A read-only kit (a shared network folder) loads as before: the lock and the kept evaluations are optional.
    Stood in for by a lock path and an evaluations path that are not writable files (tests may run as root)."""
    import torch

    from rlhf_helpers import evaluate
    from rlhf_helpers.auditor import BagOfWordsSentiment
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.models import LOCK, ensure, save_artifact, stage_dir

    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    folder = ensure(preset, "lock_demo", lambda: save_artifact(
        preset, "lock_demo", lambda tmp: (tmp.mkdir(), (tmp / "w.txt").write_text("z")), {}))
    (stage_dir(preset, "lock_demo") / LOCK).unlink()
    (stage_dir(preset, "lock_demo") / LOCK).mkdir()  # opening it for writing fails, as on a read-only folder
    assert ensure(preset, "lock_demo", lambda: pytest.fail("rebuilt")) == folder
    (tmp_path / "smoke" / "evaluations").write_text("not a folder")  # keeping an evaluation fails
    scorer = BagOfWordsSentiment(["great"], torch.tensor([1.0]), 0.0)
    summary, _ = evaluate.evaluate_policies({"p": stand_in_lm_dir}, scorer, stand_in_lm_dir, ["A film"], 2, 3,
                                            seed=0, preset=preset)
    assert summary.loc["p", "n"] == 1


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the peak is read from /proc (Linux)")
def test_a_kernels_peak_memory_is_recorded(tmp_path):
    import nbformat

    from rlhf_helpers.notebooks import execute_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("block = bytearray(300 << 20)\nblock[::4096] = b'x' * len(block[::4096])"),
                                         nbformat.v4.new_code_cell("del block")])
    stats: dict = {}
    execute_notebook(nb, tmp_path, timeout=120, stats=stats)
    assert 300 <= stats["peak_memory_mib"] < 2000  # the 300 MiB block plus the kernel itself
