"""Sample what you score, for every trainer: the log-probabilities each trainer computes for the sampled tokens
equal the log-probabilities of the distribution ``generate`` actually sampled them from (its processed scores).

The stand-in (``eos_stand_in_dir``) is built to expose every known way of breaking this: left-padded prompts of
mixed lengths whose position embeddings matter, EOS sampled often, dropout 0.1 in its config, and a stored
generation config with ``min_new_tokens``, ``top_k`` and a repetition penalty. Each test runs on the CPU and,
when torch sees one, on a CUDA GPU.
"""
from __future__ import annotations

import pytest
import torch

PROMPTS = ["This movie", "I watched it and", "Bad", "The actors in this film were", "A", "Great fun", "Why",
           "It is a long story about"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                               reason="no CUDA GPU: the GPU variant needs one"))]


def _sampled_logps(scores: tuple[torch.Tensor, ...], tokens: torch.Tensor, row: int) -> torch.Tensor:
    return torch.stack([torch.log_softmax(scores[t][row].float(), -1)[int(tok)] for t, tok in enumerate(tokens)])


@pytest.mark.parametrize("device", DEVICES)
def test_ppo_scores_what_generation_sampled(eos_stand_in_dir, device, monkeypatch):
    from rlhf_helpers.generation import generate_responses
    from rlhf_helpers.models import load_causal_lm, load_tokenizer
    from rlhf_helpers.ppo import PPOConfig, PPOTrainer

    monkeypatch.setenv("RLHF_DEVICE", device)
    tok = load_tokenizer(eos_stand_in_dir)
    trainer = PPOTrainer(PPOConfig(batch_size=16, mini_batch_size=8, seed=0), load_causal_lm(eos_stand_in_dir), tok)
    assert trainer.accelerator.mixed_precision == "no"  # sampled and scored at one precision on every device
    queries = [torch.tensor(tok(p)["input_ids"]) for p in PROMPTS * 2]
    lengths = [3, 7, 2, 5, 8, 4, 6, 8] * 2
    torch.manual_seed(0)
    sampled: list[torch.Tensor] = []
    responses = generate_responses(trainer.policy.lm, tok, queries, lengths, sampled_logprobs=sampled)
    stopped_at_eos = [len(r) < n and int(r[-1]) == tok.eos_token_id for r, n in zip(responses, lengths)]
    assert any(stopped_at_eos), "the stand-in should end some responses with EOS before their drawn length"
    assert any(int(r[0]) == tok.eos_token_id for r in responses), \
        "EOS is sampled as a first token: a stored min_new_tokens would have forbidden it"
    batch = trainer.make_experience(queries, responses, torch.zeros(len(queries)))
    for i, (r, want) in enumerate(zip(responses, sampled)):
        assert torch.allclose(batch["old_logps"][i, :len(r)].cpu(), want, atol=1e-4), i
        assert torch.allclose(batch["ref_logps"][i, :len(r)].cpu(), want, atol=1e-4), i


def _online_trainer(method: str, folder, tmp_path, beta: float = 0.1):
    from datasets import Dataset
    from trl import GRPOConfig, RLOOConfig

    from rlhf_helpers.config import get_preset
    from rlhf_helpers.grpo import make_online_trainer
    from rlhf_helpers.models import load_tokenizer, trainer_defaults

    tok = load_tokenizer(folder)
    tok.padding_side = "left"
    cls = GRPOConfig if method == "grpo" else RLOOConfig
    args = cls(output_dir=str(tmp_path / method), max_steps=1, per_device_train_batch_size=8, num_generations=2,
               max_completion_length=8, temperature=1.0, top_k=0, top_p=1.0, beta=beta, disable_dropout=True,
               save_strategy="no", **trainer_defaults(get_preset("smoke")))
    reward = lambda prompts, completions, **kw: [float(len(c)) for c in completions]  # noqa: E731
    return make_online_trainer(method, str(folder), reward, args, Dataset.from_dict({"prompt": PROMPTS}), tok), tok


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_trl_online_trainers_score_what_they_sample(eos_stand_in_dir, method, device, tmp_path, monkeypatch):
    """TRL's own sampling path (its generation config, its unwrap context) and its own scorer
    (``_get_per_token_logps_and_entropies``) for the policy and the reference, in training mode."""
    from trl.models.utils import unwrap_model_for_generation

    monkeypatch.setenv("RLHF_DEVICE", device)
    trainer, tok = _online_trainer(method, eos_stand_in_dir, tmp_path)
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    assert (enc["attention_mask"] == 0).any(), "the prompts should be left-padded to mixed lengths"
    ids, attn = enc["input_ids"].to(trainer.accelerator.device), enc["attention_mask"].to(trainer.accelerator.device)
    torch.manual_seed(0)
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     generation_kwargs=trainer.generation_kwargs) as model, torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn, generation_config=trainer.generation_config,
                             output_scores=True, return_dict_in_generate=True)
    completion = out.sequences[:, ids.shape[1]:]
    is_eos = completion == tok.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1]))
    completion_mask = (torch.arange(completion.shape[1], device=completion.device)[None] <= first_eos[:, None]).long()
    assert is_eos.any(), "the stand-in should sample EOS"
    full_ids = torch.cat([ids, completion], 1)
    full_mask = torch.cat([attn, completion_mask], 1)
    trainer.model.train()  # as Trainer.training_step leaves it: dropout would act here if it were on
    with torch.no_grad():
        for scorer in (trainer.model, trainer.ref_model):
            logps, _, _ = trainer._get_per_token_logps_and_entropies(scorer, full_ids, full_mask, completion.shape[1])
            for i in range(len(PROMPTS)):
                n = int(completion_mask[i].sum())
                want = _sampled_logps(out.scores, completion[i, :n], i)
                assert torch.allclose(logps[i, :n].float().cpu(), want.cpu(), atol=1e-4), (method, i)


def test_positions_follow_the_attention_mask(eos_stand_in_dir):
    """The hook's positions: a left-padded row scored without position ids equals the same row unpadded."""
    from rlhf_helpers.generation import pad_aware_positions
    from rlhf_helpers.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(eos_stand_in_dir)
    model = load_causal_lm(eos_stand_in_dir).eval()
    row = torch.tensor([tok("The actors in this film were")["input_ids"]])
    padded = torch.cat([torch.full((1, 3), tok.pad_token_id), row], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(row)], 1)
    with torch.no_grad():
        alone = model(input_ids=row, attention_mask=torch.ones_like(row)).logits
        shifted = model(input_ids=padded, attention_mask=mask).logits[:, 3:]
        assert not torch.allclose(alone, shifted, atol=1e-3), "without the hook, padding shifts the positions"
        pad_aware_positions(model)
        pad_aware_positions(model)  # idempotent: one hook
        fixed = model(input_ids=padded, attention_mask=mask).logits[:, 3:]
    assert torch.allclose(alone, fixed, atol=1e-5)


def test_stored_generation_settings_never_reach_sampling(eos_stand_in_dir):
    """The stand-in stores min_new_tokens=4, top_k=2 and a repetition penalty; sampling ignores all three, and
    the stored config is back in place afterwards."""
    from rlhf_helpers.generation import generate_responses
    from rlhf_helpers.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(eos_stand_in_dir)
    model = load_causal_lm(eos_stand_in_dir).eval()
    assert model.generation_config.min_new_tokens == 4
    query = torch.tensor(tok("This movie")["input_ids"])
    with torch.no_grad():
        plain_eos = torch.softmax(model(input_ids=query[None]).logits[0, -1].float(), -1)[tok.eos_token_id].item()
    torch.manual_seed(0)
    responses = generate_responses(model, tok, [query] * 400, [1] * 400)
    share = sum(int(r[0]) == tok.eos_token_id for r in responses) / 400
    assert plain_eos > 0.1 and abs(share - plain_eos) < 0.07, (share, plain_eos)
    assert model.generation_config.min_new_tokens == 4 and model.generation_config.top_k == 2


@pytest.mark.parametrize("setting", [{"min_new_tokens": 2}, {"min_length": 5}, {"top_k": 5}, {"top_p": 0.9},
                                     {"repetition_penalty": 1.2}, {"min_p": 0.1}])
def test_sampling_refuses_settings_that_change_only_the_sampler(stand_in_lm_dir, setting):
    from rlhf_helpers.generation import sample_texts
    from rlhf_helpers.models import load_pretrained

    model, tok = load_pretrained(stand_in_lm_dir)
    with pytest.raises(ValueError, match="sample what you score"):
        sample_texts(model, tok, ["This movie"], 3, **setting)


def test_online_trainers_turn_dropout_off_and_run_in_fp32(eos_stand_in_dir, tmp_path):
    from rlhf_helpers.config import get_preset
    from rlhf_helpers.grpo import _online_config

    args = _online_config("grpo", get_preset("smoke"), tmp_path, 1)
    assert args.disable_dropout is True and not args.bf16
    trainer, _ = _online_trainer("rloo", eos_stand_in_dir, tmp_path)
    probs = [m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert probs and all(p == 0.0 for p in probs)


def test_draw_tokens_samples_the_given_distribution():
    """The inverse-CDF draw gives each token its probability (within sampling noise) and never a token of
    probability 0, also for a distribution that puts its mass on the last token."""
    from rlhf_helpers.generation import draw_tokens

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_tokens(probs.repeat(1000, 1)[:1000 * 2:2], generator=g) for _ in range(20)])
    counts = torch.bincount(draws.flatten(), minlength=6).float() / draws.numel()
    assert torch.allclose(counts, probs[0], atol=0.01), counts
    assert (draw_tokens(probs[1:].repeat(500, 1), generator=g) == 5).all()
