import json
import math
import os
import subprocess
import sys

import pytest
import torch

from rlhf_helpers.ppo import (AdaptiveKLController, shift_eos_logit, PPOConfig, PPOTrainer, clipped_policy_loss, gae_advantages,
                              masked_mean, query_response_batch, whiten)


def test_gae_matches_hand_computation():
    # gamma = 1, lambda = 0.5; a 4th padded position must not change anything
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # delta_2 = 1 - 0.7 = 0.3; delta_1 = 0.7 - 0.6 = 0.1; delta_0 = 0.6 - 0.5 = 0.1
    expected = torch.tensor([[0.1 + 0.5 * (0.1 + 0.5 * 0.3), 0.1 + 0.5 * 0.3, 0.3, 0.0]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, torch.tensor([[0.725, 0.85, 1.0, 0.0]]))


def test_gae_with_discount():
    adv, _ = gae_advantages(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.9, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[1.0 + 0.9 * 2.0, 2.0]]))


def test_adaptive_kl_controller_formula():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(9.0, n_steps=64)  # error 0.5 is clipped to 0.2
    assert math.isclose(ctl.value, 0.2 * (1 + 0.2 * 64 / 10_000))
    before = ctl.value
    ctl.update(5.4, n_steps=64)  # error -0.1
    assert math.isclose(ctl.value, before * (1 - 0.1 * 64 / 10_000))


def test_clipped_loss_equals_policy_gradient_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    adv = torch.tensor([[0.3, -1.2, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac = clipped_policy_loss(logp, logp.detach(), adv, mask, cliprange=0.2)
    plain = -masked_mean(adv * torch.exp(logp - logp.detach()), mask)
    assert torch.allclose(loss, plain) and clipfrac.item() == 0.0
    g1, = torch.autograd.grad(loss, logp)
    logp2 = logp.detach().clone().requires_grad_(True)
    g2, = torch.autograd.grad(-masked_mean(adv * logp2, mask), logp2)  # REINFORCE gradient
    assert torch.allclose(g1, g2)


def test_clipping_stops_the_gradient_beyond_the_range():
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), 0.5, requires_grad=True)  # ratio e^0.5 > 1.2
    loss, clipfrac = clipped_policy_loss(logp, old, torch.ones(1, 1), torch.ones(1, 1), 0.2)
    loss.backward()
    assert clipfrac.item() == 1.0 and logp.grad.abs().item() == 0.0


def test_whiten_zero_mean_unit_variance_over_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert abs(masked_mean(w, m).item()) < 1e-6 and w[0, 3] == 0


def test_config_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(batch_size=10, mini_batch_size=4)


def _trainer(lm_dir, **cfg):
    from rlhf_helpers.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(lm_dir)
    return PPOTrainer(PPOConfig(**{"batch_size": 4, "mini_batch_size": 2, "seed": 0, **cfg}), load_causal_lm(lm_dir),
                      tok), tok


def test_padded_batch_equals_one_by_one(stand_in_lm_dir):
    from rlhf_helpers.evaluate import sequence_logprobs
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)
    queries = [torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10, 11, 12, 13])]
    responses = [torch.tensor([20, 21]), torch.tensor([22, 23, 24, 25]), torch.tensor([26])]
    batched = sequence_logprobs(model, queries, responses, tok.pad_token_id, batch_size=3)
    single = torch.cat([sequence_logprobs(model, [q], [r], tok.pad_token_id) for q, r in zip(queries, responses)])
    assert torch.allclose(batched, single, atol=1e-5)
    ids, mask, pos, r_mask, Q = query_response_batch(queries, responses, tok.pad_token_id)
    assert r_mask.sum(1).tolist() == [2, 4, 1] and pos[1, Q].item() == 1


def test_step_raises_logprob_of_rewarded_response(stand_in_lm_dir):
    from rlhf_helpers.evaluate import sequence_logprobs

    trainer, tok = _trainer(stand_in_lm_dir, learning_rate=5e-3, init_kl_coef=0.0, adaptive_kl=False, ppo_epochs=4)
    q = torch.tensor(tok("This movie was")["input_ids"])
    good, bad = torch.tensor(tok(" wonderful")["input_ids"]), torch.tensor(tok(" awful")["input_ids"])
    queries, responses, scores = [q] * 4, [good, bad, good, bad], [1.0, -1.0, 1.0, -1.0]
    lm = trainer.policy.lm
    before = sequence_logprobs(lm, [q, q], [good, bad], tok.pad_token_id)
    stats = trainer.step(queries, responses, scores)
    after = sequence_logprobs(lm, [q, q], [good, bad], tok.pad_token_id)
    assert after[0] > before[0] and after[1] < before[1]
    for key in ("score_mean", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl", "kl_coef"):
        assert key in stats and math.isfinite(stats[key])


def test_same_seed_same_stats(stand_in_lm_dir):
    def run():
        from rlhf_helpers.data import LengthSampler

        trainer, tok = _trainer(stand_in_lm_dir)
        queries = [torch.tensor(tok(p)["input_ids"]) for p in ["A great", "The worst", "I think", "This film"]]
        torch.manual_seed(1)
        responses = trainer.generate(queries, LengthSampler(2, 5, seed=1))
        stats = trainer.step(queries, responses, [0.5, -0.2, 1.0, 0.0])
        return {k: v for k, v in stats.items() if not k.startswith("time")}, responses

    (s1, r1), (s2, r2) = run(), run()
    assert s1 == s2 and all(torch.equal(a, b) for a, b in zip(r1, r2))


def test_generate_respects_sampled_lengths(eos_stand_in_dir):
    """Each response has exactly its drawn length, unless it ends earlier with a sampled EOS (its last token)."""
    from rlhf_helpers.data import LengthSampler

    trainer, tok = _trainer(eos_stand_in_dir, batch_size=40, mini_batch_size=8)
    queries = [torch.tensor(tok("A great")["input_ids"])] * 40
    same = LengthSampler(3, 6, seed=0)
    drawn = [same() for _ in queries]  # the same draws generate makes
    responses = trainer.generate(queries, LengthSampler(3, 6, seed=0))
    eos = tok.eos_token_id
    early = 0
    for r, n in zip(responses, drawn):
        ends_at_eos = int(r[-1]) == eos and (r[:-1] != eos).all()
        assert len(r) == n or (len(r) < n and ends_at_eos), (len(r), n, r.tolist())
        early += len(r) < n
    assert len(set(drawn)) > 1 and early > 0  # mixed drawn lengths, and some responses really stopped at EOS


@pytest.mark.parametrize("bad", ["mismatch", "empty_response", "nan", "wrong_batch"])
def test_step_rejects_bad_input(stand_in_lm_dir, bad):
    trainer, tok = _trainer(stand_in_lm_dir)
    q, r = torch.tensor([5, 6]), torch.tensor([7, 8])
    queries, responses, scores = [q] * 4, [r] * 4, [0.0] * 4
    if bad == "mismatch":
        scores, match = [0.0] * 3, "same length"
    elif bad == "empty_response":
        responses, match = [r, r, torch.tensor([], dtype=torch.long), r], "empty"
    elif bad == "nan":
        scores, match = [0.0, float("nan"), 0.0, 0.0], "NaN"
    else:
        queries, responses, scores, match = [q] * 2, [r] * 2, [0.0] * 2, "batch_size"
    with pytest.raises(ValueError, match=match):
        trainer.step(queries, responses, scores)


def test_saved_policy_loads_as_plain_transformers_model(stand_in_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer, _ = _trainer(stand_in_lm_dir)
    trainer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    assert type(model).__name__ == "GPT2LMHeadModel" and (tmp_path / "value_head.safetensors").exists()


def _write_prompts(path, n=16):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                            ["This movie", "I watched", "The actors", "A film that"] * (n // 4)))
    return path


def test_cli_trains_any_folder_pair(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rlhf_helpers", "ppo", "--policy", str(stand_in_lm_dir), "--reward",
           str(stand_in_classifier_dir), "--prompts", str(prompts), "--steps", "3", "--batch-size", "4",
           "--min-len", "2", "--max-len", "4", "--seed", "0", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [1, 2, 3]
    assert (out / "model.safetensors").exists() and (out / "value_head.safetensors").exists()


def test_cli_reports_bad_input_clearly(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    base = [sys.executable, "-m", "rlhf_helpers", "ppo", "--policy", str(stand_in_lm_dir), "--reward",
            str(stand_in_classifier_dir), "--prompts", str(prompts), "--steps", "1", "--out", str(tmp_path / "o")]
    res = subprocess.run(base + ["--min-len", "9", "--max-len", "3"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "larger than max_len" in res.stderr
    res = subprocess.run(base + ["--batch-size", "6", "--mini-batch-size", "4"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "divisible" in res.stderr


def test_distributed_two_cpu_processes(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    """The same trainer under `accelerate launch` with two CPU processes (gloo)."""
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "rlhf_helpers", "ppo",
           "--policy", str(stand_in_lm_dir), "--reward", str(stand_in_classifier_dir), "--prompts", str(prompts),
           "--steps", "2", "--batch-size", "4", "--min-len", "2", "--max-len", "4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29533"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2]  # written once, by the main process
    assert (out / "model.safetensors").exists()


def test_cli_missing_folder_and_bad_prompts_file(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    from rlhf_helpers.__main__ import main
    from rlhf_helpers.ppo import read_prompts

    assert main(["ppo", "--policy", str(tmp_path / "nope"), "--reward", str(stand_in_classifier_dir), "--prompts",
                 "x.jsonl", "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "wrong key"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_prompts(bad)
    bad.write_text('{"prompt": "   "}\n')
    with pytest.raises(ValueError, match="empty"):
        read_prompts(bad)


def test_dpo_rejects_non_positive_beta():
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.dpo import train_dpo

    with pytest.raises(ValueError, match="beta must be > 0"):
        train_dpo(get_preset("smoke"), beta=0.0)


# ---------------------------------------------------------------------------------------------
# Sample what you score (issue: PPO that samples exactly what it scores)
# ---------------------------------------------------------------------------------------------
def _mixed_batch(tok, n=8):
    texts = ["This movie", "I watched it and", "Bad", "The actors in this film were", "A", "Great fun", "Why",
             "It is a long story about"]
    return [torch.tensor(tok(t)["input_ids"]) for t in (texts * n)[:n]]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_old_logps_equal_the_sampling_distribution(stand_in_lm_dir, temperature):
    """Mixed query and response lengths: log-probs of the sampled tokens under the distribution generate
    actually sampled from (its processed scores) equal step()'s old log-probs."""
    from rlhf_helpers.generation import cut_response, left_pad, sampling_config

    trainer, tok = _trainer(stand_in_lm_dir, batch_size=8, mini_batch_size=4, temperature=temperature)
    queries = _mixed_batch(tok)
    lengths = [3, 7, 1, 5, 8, 2, 6, 4]
    ids, mask = left_pad(queries, tok.pad_token_id)
    torch.manual_seed(3)
    out = trainer.policy.lm.generate(input_ids=ids, attention_mask=mask, output_scores=True,
                                     return_dict_in_generate=True,
                                     generation_config=sampling_config(tok, max(lengths), temperature=temperature))
    new = out.sequences[:, ids.shape[1]:]
    responses = [cut_response(row, n, tok.eos_token_id) for row, n in zip(new, lengths)]
    # cut at each drawn length; the drawn lengths, not the sampler, make them mixed
    batch = trainer.make_experience(queries, responses, torch.zeros(8))
    for i, r in enumerate(responses):
        sampled = torch.stack([torch.log_softmax(out.scores[t][i].float(), -1)[tok_id]
                               for t, tok_id in enumerate(r)])
        assert torch.allclose(batch["old_logps"][i, :len(r)], sampled, atol=1e-4), i
        assert batch["mask"][i].sum() == len(r)


def test_policy_equal_to_reference_reports_zero_kl(eos_stand_in_dir):
    """Policy and reference hold the same weights but are separate modules, and the config asks for GPT-2's
    dropout of 0.1: the KL is exactly 0 only if dropout is really off and both score at the same positions."""
    trainer, tok = _trainer(eos_stand_in_dir, batch_size=8, mini_batch_size=4)
    assert trainer.ref_model is not trainer.policy.lm and trainer.policy.lm.config.resid_pdrop == 0.1
    queries = _mixed_batch(tok)
    torch.manual_seed(0)
    responses = trainer.generate(queries, lambda: 6)
    stats = trainer.step(queries, responses, torch.randn(8))
    assert stats["kl"] == 0.0 and stats["kl_exact"] == 0.0


def test_eos_logit_difference_never_gives_negative_kl(stand_in_lm_dir):
    """A policy that differs from the reference only in its EOS logit: the KL PPO reports is positive when
    EOS can be sampled, and the old trap (EOS suppressed while sampling, scored with it) shows up negative."""
    from rlhf_helpers.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(stand_in_lm_dir)
    ref = load_causal_lm(stand_in_lm_dir)
    policy = shift_eos_logit(ref, tok.eos_token_id, 3.0)
    cfg = PPOConfig(batch_size=64, mini_batch_size=64, ppo_epochs=1, learning_rate=1e-9, seed=0, adaptive_kl=False)
    trainer = PPOTrainer(cfg, policy, tok, ref_model=ref)
    queries = _mixed_batch(tok, 64)
    torch.manual_seed(0)
    responses = trainer.generate(queries, lambda: 8)
    batch = trainer.make_experience(queries, responses, torch.zeros(64))
    assert batch["kl"].sum(1).mean() > 0 and (batch["kl_exact"].sum(1) > 0).all()
    # the trap, on purpose: suppress EOS while sampling, score with the full softmax
    from rlhf_helpers.generation import left_pad

    ids, mask = left_pad(queries, tok.pad_token_id)
    torch.manual_seed(0)
    gen = trainer.policy.lm.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=8,
                                     min_new_tokens=8, pad_token_id=tok.pad_token_id)
    trapped = [row for row in gen[:, ids.shape[1]:]]
    bad = trainer.make_experience(queries, trapped, torch.zeros(64))
    assert bad["kl"].sum(1).mean() < 0  # what the classic notebook's users saw


def test_generate_refuses_logits_processors(stand_in_lm_dir):
    trainer, tok = _trainer(stand_in_lm_dir)
    for kwargs in ({"top_k": 50}, {"top_p": 0.9}, {"repetition_penalty": 1.2}, {"min_new_tokens": 4}):
        with pytest.raises(ValueError, match="off-policy"):
            trainer.generate(_mixed_batch(tok, 4), lambda: 3, **kwargs)
    from rlhf_helpers.generation import sample_texts

    with pytest.raises(ValueError, match="suppresses EOS while sampling"):
        sample_texts(trainer.policy.lm, tok, ["This movie"], 3, min_new_tokens=3)


def test_value_head_starts_at_zero_and_no_weight_decay(stand_in_lm_dir):
    trainer, tok = _trainer(stand_in_lm_dir)
    assert torch.count_nonzero(trainer.policy.v_head.weight) == 0 and trainer.policy.v_head.bias.item() == 0
    assert all(g["weight_decay"] == 0 for g in trainer.optimizer.param_groups)


def test_reward_normalisation_trains_on_standardised_scores(stand_in_lm_dir):
    trainer, tok = _trainer(stand_in_lm_dir, reward_norm=True)
    trainer.calibrate_reward(torch.tensor([1.0, 3.0, 1.0, 3.0]))
    queries = _mixed_batch(tok, 4)
    torch.manual_seed(0)
    stats = trainer.step(queries, trainer.generate(queries, lambda: 3), torch.tensor([3.0, 3.0, 1.0, 1.0]))
    std = torch.tensor([1.0, 3.0, 1.0, 3.0]).std().item()
    assert stats["score_mean"] == pytest.approx(2.0) and stats["train_score_mean"] == pytest.approx(0.0, abs=1e-6)
    stats = trainer.step(queries, trainer.generate(queries, lambda: 3), torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert stats["train_score_mean"] == pytest.approx(3.0 / std, rel=1e-5)


def test_ppo_update_is_what_step_runs(stand_in_lm_dir):
    """step() == make_experience + ppo_update (+ the KL controller): the function notebook 03 shows."""
    a, tok = _trainer(stand_in_lm_dir, learning_rate=1e-3)
    b, _ = _trainer(stand_in_lm_dir, learning_rate=1e-3)
    queries = _mixed_batch(tok, 4)
    torch.manual_seed(0)
    responses = a.generate(queries, lambda: 4)
    scores = torch.tensor([1.0, -1.0, 0.5, 2.0])
    stats = a.step(queries, responses, scores)
    manual = b.ppo_update(b.make_experience(queries, responses, scores))
    for name in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "entropy"):
        assert manual[name] == pytest.approx(stats[name], rel=1e-5, abs=1e-7), name
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.allclose(pa, pb)


def test_reward_folder_that_is_not_a_sentiment_classifier_is_refused(stand_in_lm_dir, stand_in_classifier_dir,
                                                                     tmp_path):
    """A causal-LM folder, a classifier saved without its head, and placeholder labels are all refused."""
    from transformers import AutoModelForSequenceClassification

    from rlhf_helpers.models import NotAClassifierError
    from rlhf_helpers.rater import SentimentReward

    with pytest.raises(NotAClassifierError, match="not a trained classifier"):
        SentimentReward(stand_in_lm_dir)
    placeholder = tmp_path / "placeholder_labels"
    model = AutoModelForSequenceClassification.from_pretrained(stand_in_classifier_dir)
    model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    model.save_pretrained(placeholder)
    from rlhf_helpers.models import load_tokenizer

    load_tokenizer(stand_in_classifier_dir).save_pretrained(placeholder)
    with pytest.raises(ValueError, match="placeholder_labels.*positive class"):
        SentimentReward(placeholder)
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    cmd = [sys.executable, "-m", "rlhf_helpers", "ppo", "--policy", str(stand_in_lm_dir), "--reward",
           str(stand_in_lm_dir), "--prompts", str(prompts), "--steps", "1", "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "not a trained classifier" in res.stderr and not (tmp_path / "o").exists()


def test_cli_defaults_are_the_presets_tuned_settings(stand_in_lm_dir, stand_in_classifier_dir, tmp_path):
    from rlhf_helpers.config import get_preset

    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    cmd = [sys.executable, "-m", "rlhf_helpers", "ppo", "--policy", str(stand_in_lm_dir), "--reward",
           str(stand_in_classifier_dir), "--prompts", str(prompts), "--steps", "1", "--batch-size", "4",
           "--min-len", "2", "--max-len", "3", "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("[ppo] settings"))
    used = json.loads(line.split(": ", 1)[1])
    tuned = get_preset("tiny").ppo
    assert used["learning_rate"] == tuned.learning_rate and used["init_kl_coef"] == tuned.init_kl_coef
    assert used["kl_target"] == tuned.kl_target and used["ppo_epochs"] == tuned.ppo_epochs
    assert used["batch_size"] == 4


def test_evaluation_kl_is_exactly_zero_for_the_reference_and_never_negative(stand_in_lm_dir):
    from rlhf_helpers.evaluate import sequence_kl
    from rlhf_helpers.generation import generate_responses
    from rlhf_helpers.models import load_pretrained

    ref, tok = load_pretrained(stand_in_lm_dir)
    queries = _mixed_batch(tok, 16)
    torch.manual_seed(0)
    responses = generate_responses(ref, tok, queries, [6] * 16)
    assert torch.equal(sequence_kl(ref, ref, queries, responses, tok.pad_token_id), torch.zeros(16))
    shifted = shift_eos_logit(ref, tok.eos_token_id, 3.0).eval()
    torch.manual_seed(0)
    responses = generate_responses(shifted, tok, queries, [6] * 16)
    assert (sequence_kl(shifted, ref, queries, responses, tok.pad_token_id) > 0).all()
