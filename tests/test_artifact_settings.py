"""Artifacts built with other settings than the preset has now (new defaults pulled since) are named, not
silently used: `ensure` prints what changed and how to rebuild, `doctor` warns, and nothing is rebuilt or lost."""
import dataclasses
import json

import pytest

from rlhf_helpers import doctor
from rlhf_helpers.config import get_preset, ppo_config_kwargs
from rlhf_helpers.models import META, ensure, expected_settings, model_dir, settings_drift


def _fake_artifact(preset, stage, settings):
    folder = model_dir(preset, stage)
    folder.mkdir(parents=True)
    (folder / META).write_text(json.dumps({"preset": preset.name, "stage": stage, "settings": settings}))
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path))
    return tmp_path


def test_no_drift_when_built_with_the_current_settings():
    preset = get_preset("tiny")
    for stage in ("sft", "classifier", "pairs", "reward_model", "ppo", "dpo", "dpo_pairs", "dpo_round2",
                  "dpo_pairs_round2", "grpo"):
        stored = json.loads(json.dumps(expected_settings(preset, stage)))
        assert settings_drift(preset, stage, {"settings": stored}) == [], stage
    assert expected_settings(preset, "tokenizer") is None  # not tracked: nothing to compare


def test_drift_names_each_changed_setting_and_ignores_what_learns_nothing():
    preset = get_preset("tiny")
    old = {**ppo_config_kwargs(preset), "kl_target": 5.0, "reward_norm": False}
    assert settings_drift(preset, "ppo", {"settings": old}) == [f"kl_target 5.0 -> {preset.ppo.kl_target}",
                                                                "reward_norm False -> True"]
    dpo = dataclasses.asdict(preset.dpo)
    assert settings_drift(preset, "dpo", {"settings": {**dpo, "save_steps": 999}}) == []  # checkpointing only
    assert settings_drift(preset, "dpo_beta0.5", {"settings": {**dpo, "beta": 0.5}}) == []  # the sweep's own beta
    # the pairs do not depend on how long DPO trains on them
    assert settings_drift(preset, "dpo_pairs", {"settings": {**dpo, "max_steps": 150, "learning_rate": 1e-4}}) == []
    assert settings_drift(preset, "dpo_pairs", {"settings": {**dpo, "n_prompts": 10}}) == [
        f"n_prompts 10 -> {preset.dpo.n_prompts}"]
    # round 1 learns nothing from the later rounds' settings; round 2 does from its NLL weight, not from how many
    # rounds follow it
    later = {**dpo, "rounds": 3, "sft_weight": 0.0, "later_learning_rate": None}
    assert settings_drift(preset, "dpo", {"settings": later}) == []
    assert settings_drift(preset, "dpo_round2", {"settings": later}) == [
        f"later_learning_rate None -> {preset.dpo.later_learning_rate}", f"sft_weight 0.0 -> {preset.dpo.sft_weight}"]


def test_ensure_uses_a_drifted_artifact_as_it_is_and_says_how_to_rebuild(home, capsys):
    preset = get_preset("tiny")
    folder = _fake_artifact(preset, "ppo", {**ppo_config_kwargs(preset), "kl_target": 5.0})

    def build():
        raise AssertionError("a finished artifact must not be rebuilt without --force")

    assert ensure(preset, "ppo", build) == folder
    out = capsys.readouterr().out
    assert f"kl_target 5.0 -> {preset.ppo.kl_target}" in out and "build ppo --preset tiny --force" in out
    assert (folder / META).exists()  # nothing lost


def test_ensure_is_quiet_when_the_settings_match(home, capsys):
    preset = get_preset("tiny")
    _fake_artifact(preset, "reward_model", json.loads(json.dumps(expected_settings(preset, "reward_model"))))
    ensure(preset, "reward_model", lambda: None)
    assert "other settings" not in capsys.readouterr().out


def test_doctor_warns_about_drifted_artifacts(home):
    preset = get_preset("tiny")
    assert doctor.check_artifact_settings(preset, home) is None  # nothing built: nothing to say
    _fake_artifact(preset, "dpo", {**dataclasses.asdict(preset.dpo), "max_steps": 150})
    finding = doctor.check_artifact_settings(preset, home)
    assert finding.status == "warn" and "dpo (max_steps 150 -> 75)" in finding.detail
    assert "--force" in finding.fix
