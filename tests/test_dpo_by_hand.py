"""Notebook 04's DPO by hand: the loss of one real batch, computed in plain PyTorch, equals what TRL logs."""
import math
import tempfile

import pytest
import torch
from datasets import Dataset

from rlhf_helpers.config import get_preset
from rlhf_helpers.dpo import completion_logps, dpo_batch_check, dpo_loss_by_hand
from rlhf_helpers.models import load_pretrained


@pytest.fixture(scope="module")
def moved_policy_dir(tmp_path_factory, stand_in_lm_dir):
    """The stand-in GPT-2 with its weights nudged: a policy that differs from its reference."""
    from transformers import GPT2LMHeadModel

    from rlhf_helpers.models import load_tokenizer

    torch.manual_seed(1)
    model = GPT2LMHeadModel.from_pretrained(stand_in_lm_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("moved_policy")
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer(stand_in_lm_dir).save_pretrained(folder)
    return folder


PAIRS = Dataset.from_dict({
    "prompt": ["This movie was", "A waste of", "I loved the", "The plot was"],
    "chosen": [" wonderful and moving.", " nothing, a great film.", " music and the acting.", " brilliant."],
    "rejected": [" terrible and boring.", " time: bad acting.", " ending less.", " dull and awful, the worst."],
})


def test_completion_logps_masks_the_prompt(stand_in_lm_dir):
    model, tok = load_pretrained(stand_in_lm_dir)
    ids = torch.tensor([tok("This movie was great")["input_ids"]])
    full = torch.ones_like(ids)
    nothing = torch.zeros_like(ids)
    assert completion_logps(model, ids, full, nothing).item() == 0.0
    last_only = nothing.clone()
    last_only[0, -1] = 1
    logits = model(input_ids=ids).logits[0, -2]
    expected = torch.log_softmax(logits, -1)[ids[0, -1]].item()
    assert completion_logps(model, ids, full, last_only).item() == pytest.approx(expected, abs=1e-5)


def test_loss_is_log_2_when_the_policy_is_the_reference(stand_in_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the check's scratch folder would land
    check = dpo_batch_check(stand_in_lm_dir, stand_in_lm_dir, PAIRS, beta=0.1, preset=get_preset("smoke"))
    assert check["by_hand"]["loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    assert check["trl_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert not list(tmp_path.glob("dpo-check-*")), "the check's scratch folder was left behind"


def test_by_hand_equals_what_trl_logs(moved_policy_dir, stand_in_lm_dir):
    check = dpo_batch_check(moved_policy_dir, stand_in_lm_dir, PAIRS, beta=0.5, preset=get_preset("smoke"))
    hand = check["by_hand"]
    assert abs(hand["loss"].item() - math.log(2)) > 1e-3, "the moved policy should not sit at log 2"
    assert hand["loss"].item() == pytest.approx(check["trl_loss"], abs=1e-4)
    assert hand["margins"].mean().item() == pytest.approx(check["trl_log"]["rewards/margins"], abs=1e-4)
    assert check["batch"]["input_ids"].shape[0] == 2 * len(PAIRS)  # chosen first, then rejected
    policy, reference = (load_pretrained(p)[0] for p in (moved_policy_dir, stand_in_lm_dir))
    again = dpo_loss_by_hand(policy, reference, check["batch"], beta=0.5)
    assert again["loss"].item() == pytest.approx(hand["loss"].item(), abs=1e-6)  # lr 0: TRL left the policy as it was


def test_later_rounds_loss_adds_the_chosen_nll_and_equals_what_trl_logs(moved_policy_dir, stand_in_lm_dir):
    """Rounds > 1 train on DPO + w x NLL(chosen) (TRL's "sft" loss type): the by-hand sum equals TRL's loss."""
    plain = dpo_batch_check(moved_policy_dir, stand_in_lm_dir, PAIRS, beta=0.5, preset=get_preset("smoke"))
    mixed = dpo_batch_check(moved_policy_dir, stand_in_lm_dir, PAIRS, beta=0.5, preset=get_preset("smoke"),
                            sft_weight=0.5)
    hand = mixed["by_hand"]
    assert hand["nll_chosen"].item() > 0.5  # a stand-in model gives its tokens far from probability 1
    assert hand["dpo_loss"].item() == pytest.approx(plain["trl_loss"], abs=1e-4)  # same DPO part
    assert hand["loss"].item() == pytest.approx(hand["dpo_loss"].item() + 0.5 * hand["nll_chosen"].item(), abs=1e-6)
    assert mixed["trl_loss"] == pytest.approx(hand["loss"].item(), abs=1e-4)
    assert abs(mixed["trl_loss"] - plain["trl_loss"]) > 0.1  # the term changes what TRL optimises
    # the NLL is per chosen token: the mean of -log p over every completion token of the chosen half
    n_tokens = mixed["batch"]["completion_mask"][:, 1:].chunk(2)[0].sum().item()
    assert n_tokens > len(PAIRS)  # several tokens per chosen response, not one per sequence
    assert hand["nll_chosen"].item() == pytest.approx(-hand["chosen_logps"].sum().item() / n_tokens, abs=1e-6)
