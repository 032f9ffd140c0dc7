"""The speed changes of issue 12 keep behaviour: same SFT loss without TRL's fused head, bf16 only where asked
for and supported, pairs that split a token dropped, PPO's fp32 accelerator after a bf16 trainer."""
import pytest


def test_cpu_bf16_follows_the_override(monkeypatch):
    from rlhf_helpers.config import SMOKE
    from rlhf_helpers.models import cpu_bf16, trainer_defaults

    monkeypatch.setenv("RLHF_CPU_BF16", "0")
    assert cpu_bf16() is False
    assert trainer_defaults(SMOKE, mixed_precision=True)["bf16"] is False
    monkeypatch.setenv("RLHF_CPU_BF16", "1")
    assert cpu_bf16() is True
    assert trainer_defaults(SMOKE, mixed_precision=True)["bf16"] is True
    # the RL stages never ask for it: fp32 on a CPU whatever the CPU can do
    assert trainer_defaults(SMOKE)["bf16"] is False


def test_sft_loss_without_the_fused_head_equals_trls(tmp_path, stand_in_lm_dir, stand_in_tokenizer, monkeypatch):
    """Same batch, same weights: the model's own loss (our CPU path) equals TRL's fused-head loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from rlhf_helpers.config import SMOKE
    from rlhf_helpers.models import trainer_defaults
    from rlhf_helpers.sft import model_loss_sft_trainer

    monkeypatch.setenv("RLHF_CPU_BF16", "0")
    texts = ["This movie was wonderful, a great story.", "A waste of time: bad acting and a dull end.",
             "I loved the music.", "This film was terrible, boring and awful; the worst plot I have seen."]
    losses = []
    for cls in (SFTTrainer, model_loss_sft_trainer()):
        model = AutoModelForCausalLM.from_pretrained(stand_in_lm_dir)
        args = SFTConfig(output_dir=str(tmp_path / cls.__name__), per_device_train_batch_size=4, max_length=16,
                         **trainer_defaults(SMOKE))
        trainer = cls(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
                      processing_class=stand_in_tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        assert (batch["labels"] == -100).any()  # padding is in the batch and must be left out of both losses
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(batch)).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_pairs_that_split_a_token_are_dropped(stand_in_tokenizer):
    from datasets import Dataset

    from rlhf_helpers.pairs import token_boundary_ok

    tok = stand_in_tokenizer
    prompt = "This mo"
    # "mo" + "vie" re-tokenizes with a different last prompt token: the trainer would cut the prompt short
    assert tok(prompt + "vie")["input_ids"][:len(tok(prompt)["input_ids"])] != tok(prompt)["input_ids"]
    pairs = Dataset.from_dict({"prompt": [prompt, prompt, prompt],
                               "chosen": [" was great.", "vie was great.", " was great."],
                               "rejected": [" was bad.", " was bad.", "vie was bad."]})
    assert token_boundary_ok(tok, pairs).tolist() == [True, False, False]
    assert token_boundary_ok(tok, pairs.select([])).tolist() == []


def test_ppo_gets_fp32_after_a_bf16_trainer_in_the_same_process():
    """A notebook kernel may train SFT (bf16 autocast) before PPO: PPO must still get its fp32 accelerator."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from rlhf_helpers.ppo import _make_accelerator

    AcceleratorState._reset_state(reset_partial_state=True)  # as transformers' TrainingArguments does
    Accelerator(mixed_precision="bf16", cpu=True)  # what a bf16 trainer leaves behind in the process
    acc = _make_accelerator()
    assert acc.mixed_precision == "no"


def test_review_openings_are_short_and_keep_their_labels(stand_in_tokenizer):
    from datasets import Dataset

    from rlhf_helpers.rater import review_openings

    tok = stand_in_tokenizer
    reviews = Dataset.from_dict({"text": ["This movie was wonderful, a great and moving story with brilliant acting.",
                                          "A waste of time: bad acting, poor writing and a dull ending."] * 10,
                                 "label": [1, 0] * 10})
    openings = review_openings(reviews, tok, (3, 6), seed=0)
    assert openings["label"] == reviews["label"]
    lengths = [len(tok(t)["input_ids"]) for t in openings["text"]]
    assert min(lengths) >= 2 and max(lengths) <= 7 and len(set(lengths)) > 1  # drawn lengths, re-tokenized
    assert all(r.startswith(o.strip()[:3]) for o, r in zip(openings["text"], reviews["text"]))
    with pytest.raises(ValueError, match="opening_tokens"):
        review_openings(reviews, tok, (5, 2))



def test_no_pairs_left_stops_with_the_fix_named():
    from datasets import Dataset

    from rlhf_helpers.pairs import require_pairs

    require_pairs(Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]}), "preset.pairs")
    with pytest.raises(ValueError, match=r"lower preset\.dpo\.margin"):
        require_pairs(Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}), "preset.dpo")
