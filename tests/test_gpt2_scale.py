"""Smoke test of benchmarks/gpt2_scale.py at a tiny size: PPO, DPO and GRPO steps all run and are reported."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpt2_scale_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("gpt2_scale", ROOT / "benchmarks" / "gpt2_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gs.md"
    summary = mod.main(["--tiny-models", "--episodes", "8", "--dpo-batch", "2", "--device", "cpu", "--out", str(out)])
    for key in ("ppo_generate", "ppo_score", "ppo_step", "ppo_total", "dpo_step", "grpo_step"):
        assert summary["results"][key]["seconds"] > 0, key
        assert summary["results"][key]["peak_GiB"] > 0, key
    assert summary["episodes"] == 8
    text = out.read_text()
    assert "PPO (ours): one step of 8 episodes" in text and "GRPO (TRL): one step" in text
    assert json.loads(out.with_suffix(".json").read_text())["results"]["dpo_step"]["pairs"] == 2


def test_full_size_configs_are_gpt2_and_distilbert_base():
    from transformers import DistilBertConfig, GPT2Config

    g = GPT2Config()
    assert (g.vocab_size, g.n_embd, g.n_layer, g.n_head, g.n_positions) == (50257, 768, 12, 12, 1024)
    d = DistilBertConfig()
    assert (d.vocab_size, d.dim, d.n_layers) == (30522, 768, 6)
