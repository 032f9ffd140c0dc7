import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_helpers.config import get_preset
from rlhf_helpers.models import (META, ArtifactError, ensure, is_complete, load_causal_lm, model_dir, read_meta,
                                 save_artifact, stage_dir)


def _save_text(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "weights.txt").write_text("ok")


def test_save_and_ensure_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    built = []
    path = ensure(preset, "demo", lambda: built.append(1) or save_artifact(preset, "demo", _save_text, {"x": 1}))
    assert built == [1] and (path / "weights.txt").read_text() == "ok"
    assert read_meta(preset, "demo")["x"] == 1 and read_meta(path)["preset"] == "smoke"
    again = ensure(preset, "demo", lambda: built.append(2))
    assert again == path and built == [1]  # a finished stage is never retrained unless forced


def test_half_written_save_is_ignored_and_cleaned(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    tmp = stage_dir(preset, "demo") / "model.tmp-123-456"
    tmp.mkdir(parents=True)
    (tmp / "weights.txt").write_text("half")
    final = model_dir(preset, "demo")
    final.mkdir()
    (final / "weights.txt").write_text("no metadata: a killed or foreign save")
    assert not is_complete(preset, "demo")
    path = ensure(preset, "demo", lambda: save_artifact(preset, "demo", _save_text, {}))
    assert not tmp.exists() and (path / META).exists() and (path / "weights.txt").read_text() == "ok"
    assert "unfinished save" in capsys.readouterr().out


def test_artifact_of_other_preset_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    path = save_artifact(preset, "demo", _save_text, {})
    meta = json.loads((path / META).read_text())
    (path / META).write_text(json.dumps({**meta, "preset": "tiny"}))
    with pytest.raises(ArtifactError, match="rm -r"):
        ensure(preset, "demo", lambda: None)


def test_truncated_safetensors_gives_clear_error(stand_in_lm_dir, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(stand_in_lm_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError) as err:
        load_causal_lm(broken)
    assert "corrupt" in str(err.value) and "rm -r" in str(err.value)


def test_offline_hub_name_error_points_to_tiny():
    with pytest.raises(ArtifactError, match="RLHF_PRESET=tiny"):
        load_causal_lm("gpt2")


def test_gpt2_dataset_offline_error_points_to_tiny(monkeypatch):
    from rlhf_helpers.data import HubUnreachableError, load_imdb

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="RLHF_PRESET=tiny"):
        load_imdb(get_preset("gpt2"))


def _kill_after(cmd, env, ready, timeout=240):
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; return whether it was killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    proc.kill()
    return False


SFT_SCRIPT = """
import sys
from rlhf_helpers.config import get_preset, SFTSettings
from rlhf_helpers.sft import ensure_sft
p = get_preset("smoke")
p = p.replace(sft=SFTSettings(max_length=32, max_steps=60, batch_size=8, eval_reviews=16, save_steps=10,
                              warmup_steps=1))
print(ensure_sft(p))
"""


def test_sft_killed_mid_run_resumes(tmp_path):
    env = {**os.environ, "RLHF_HOME": str(tmp_path), "RLHF_PRESET": "smoke"}
    ckpts = tmp_path / "smoke" / "sft" / "checkpoints"

    def ready():
        return any((c / "trainer_state.json").exists() for c in ckpts.glob("checkpoint-*"))

    assert _kill_after([sys.executable, "-c", SFT_SCRIPT], env, ready), "training ended before a checkpoint"
    assert not (tmp_path / "smoke" / "sft" / "model" / META).exists()
    res = subprocess.run([sys.executable, "-c", SFT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((tmp_path / "smoke" / "sft" / "model" / META).read_text())
    assert meta["metrics"]["resumed_from"] and "checkpoint-" in meta["metrics"]["resumed_from"]
    assert meta["metrics"]["steps"] == 60


def test_ppo_killed_mid_run_resumes(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["A film", "The plot", "I saw"] * 4))
    out = tmp_path / "ppo"
    cmd = [sys.executable, "-m", "rlhf_helpers", "ppo", "--policy", str(stand_in_lm_dir), "--reward",
           str(stand_in_classifier_dir), "--prompts", str(prompts), "--steps", "30", "--batch-size", "4",
           "--min-len", "2", "--max-len", "3", "--save-every", "2", "--out", str(out)]
    env = {**os.environ}
    done = out / "checkpoints" / "last" / "done"
    assert _kill_after(cmd, env, lambda: done.exists() and int(done.read_text() or 0) >= 4)
    saved_step = int(done.read_text())
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from step {saved_step}" in res.stdout
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_artifact_from_another_tokenizer_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    preset = get_preset("smoke")
    save_artifact(preset, "tokenizer", _save_text, {"tokenizer": "aaaa"})
    save_artifact(preset, "demo", _save_text, {"tokenizer": "bbbb"})
    with pytest.raises(ArtifactError, match="different tokenizer"):
        ensure(preset, "demo", lambda: None)


def test_a_kill_while_writing_a_checkpoint_keeps_the_one_before(tmp_path):
    """Killed while writing checkpoint-20 (no trainer_state.json yet): resume from the complete checkpoint-10, not
    from scratch (the CI flake of test_sft_killed_mid_run_resumes, where training saves every few milliseconds)."""
    from rlhf_helpers.models import last_checkpoint

    for step, complete in ((10, True), (20, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path) is None
