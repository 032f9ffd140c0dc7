"""Writer -> improver -> judge (the reward model in notebook 06, or any scorer): the judge's pick, best-of-n, and a
quality log that survives concurrency and crashes."""
import json
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import time

import numpy as np
import pytest
import torch

from rlhf_helpers.data import LengthSampler
from rlhf_helpers.generation import sample_texts
from rlhf_helpers.guardrail import (Assistant, Judge, QualityLog, best_of_n, best_of_n_curve, best_of_n_kl,
                                    default_log_path)

PROMPTS = ["This movie was", "I watched this film", "The acting"]


def count_good(texts):
    """A stand-in judge: how often 'good' appears, plus a tiny length bonus to break ties."""
    return [t.count("good") + 1e-3 * len(t) for t in texts]


@pytest.fixture(scope="module")
def stand_in_policy(stand_in_lm_dir):
    from rlhf_helpers.models import load_pretrained

    return load_pretrained(stand_in_lm_dir)


@pytest.fixture(scope="module")
def stand_in_reward_model(stand_in_tokenizer):
    """A one-output GPT-2 sequence classifier (the reward model's class), randomly initialised."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(1)
    tok = stand_in_tokenizer
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return GPT2ForSequenceClassification(cfg).eval(), tok


# --------------------------------------------------------------------------------------------
# The judge and best-of-n
# --------------------------------------------------------------------------------------------
def test_judge_picks_the_max_scoring_candidate():
    judge = Judge(count_good, name="count_good")
    cands = [" bad", " good good", " good", " good good"]  # a tie between 1 and 3: the first wins
    index, scores = judge.pick("It was", cands)
    assert scores == count_good(["It was" + c for c in cands])
    assert index == 1 and scores[index] == max(scores)
    with pytest.raises(ValueError, match="no candidates"):
        judge.pick("It was", [])


def test_reward_model_judge_picks_its_highest_score(stand_in_reward_model):
    from rlhf_helpers.reward_model import reward_model_scores

    judge = Judge(stand_in_reward_model, max_length=32)
    cands = [" wonderful film", " awful", " a truly excellent and fun film", " dull"]
    index, scores = judge.pick("This movie was", cands)
    expected = reward_model_scores(*stand_in_reward_model, ["This movie was" + c for c in cands], max_length=32)
    assert np.allclose(scores, expected.numpy(), atol=1e-5)
    assert index == int(np.argmax(expected.numpy()))


def test_best_of_one_is_plain_sampling(stand_in_policy):
    model, tok = stand_in_policy
    judge = Judge(count_good)
    plain = sample_texts(model, tok, PROMPTS, LengthSampler(3, 7, seed=5), seed=5)
    picked = best_of_n(model, tok, PROMPTS, 1, judge, min_len=3, max_len=7, seed=5)
    assert [b.text for b in picked] == plain
    single = best_of_n(model, tok, PROMPTS[0], 1, judge, min_len=3, max_len=7, seed=5)
    alone = sample_texts(model, tok, PROMPTS[:1], LengthSampler(3, 7, seed=5), seed=5)
    assert single.text == alone[0] and single.index == 0 and single.candidates == alone


def test_best_of_n_keeps_the_judges_favourite(stand_in_policy):
    model, tok = stand_in_policy
    out = best_of_n(model, tok, PROMPTS, 4, Judge(count_good), min_len=3, max_len=7, seed=0)
    for b, p in zip(out, PROMPTS):
        assert len(b.candidates) == 4 and b.scores == count_good([p + c for c in b.candidates])
        assert b.index == int(np.argmax(b.scores)) and b.text == b.candidates[b.index]
    two = best_of_n(model, tok, PROMPTS, 2, Judge(count_good), min_len=3, max_len=7, seed=0)
    assert [b.candidates for b in two] == [b.candidates[:2] for b in out]  # nested: one draw serves every n
    with pytest.raises(ValueError, match="empty"):
        best_of_n(model, tok, ["  "], 2, Judge(count_good), 3, 7)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(model, tok, PROMPTS, 0, Judge(count_good), 3, 7)


def test_best_of_n_kl_and_curve():
    assert best_of_n_kl(1) == 0.0
    assert math.isclose(best_of_n_kl(2), math.log(2) - 0.5)
    judge = np.array([[0.0, 2.0, 1.0, 5.0], [3.0, 1.0, 0.0, 0.0]])
    grader = np.array([[1.0, 0.0, 4.0, 2.0], [0.0, 2.0, 9.0, 0.0]])
    curve = best_of_n_curve(judge, grader, [1, 2, 4]).set_index("n")
    assert curve.loc[1, "reward"] == 0.5 and curve.loc[2, "reward"] == 0.0  # picks 0.0 (p1) and 0.0 (p2)
    assert curve.loc[4, "reward"] == 1.0 and curve.loc[4, "best_possible"] == 6.5
    assert curve.loc[4, "judge_score"] == 4.0


# --------------------------------------------------------------------------------------------
# The assistant
# --------------------------------------------------------------------------------------------
def test_assistant_keeps_the_better_answer_and_logs_it(stand_in_policy, tmp_path):
    log = QualityLog(tmp_path / "log.sqlite")
    bot = Assistant(stand_in_policy, stand_in_policy, Judge(count_good), log=log, min_len=3, max_len=6,
                    versions={"release": "v1"})
    r = bot.respond("This movie was")
    assert {c.source for c in r.candidates} == {"writer", "improver"}
    best = max(r.candidates, key=lambda c: c.score)
    assert r.winner == best.source and r.text == best.text
    frame = log.to_frame(decode=True)
    assert len(frame) == 1 and frame.loc[0, "winner"] == r.winner and frame.loc[0, "version_release"] == "v1"
    assert frame.loc[0, "scores"] == [c.score for c in r.candidates]
    with pytest.raises(ValueError, match="empty"):
        bot.respond("")


def test_improver_can_read_the_draft(stand_in_policy):
    bot = Assistant(stand_in_policy, stand_in_policy, Judge(count_good), min_len=3, max_len=6,
                    draft_in_context=True, connector=" So,")
    r = bot.respond("The acting")
    draft = r.candidates[0].text
    assert r.draft_in_context and r.improver_context == "The acting" + draft + " So,"


# --------------------------------------------------------------------------------------------
# The quality log
# --------------------------------------------------------------------------------------------
def test_quality_log_validates_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_HOME", str(tmp_path / "home"))
    log = QualityLog()
    assert log.path == default_log_path() and log.path.parent.name == "smoke"
    rid = log.log("Great", [" film", " movie"], [0.5, 1.5], "improver", sources=["writer", "improver"],
                  versions={"writer": "sft"})
    assert rid == 1 and len(log) == 1
    raw = log.to_frame()
    assert json.loads(raw.loc[0, "candidates"]) == [" film", " movie"]  # JSON text columns
    assert json.loads(raw.loc[0, "scores"]) == [0.5, 1.5] and raw.loc[0, "chosen"] == " movie"
    for bad, match in [(dict(prompt=""), "empty"), (dict(scores=[1.0]), "scores"),
                       (dict(scores=[1.0, float("nan")]), "NaN"), (dict(winner="judge"), "winner"),
                       (dict(winner=2), "winner"), (dict(candidates=[]), "no candidates")]:
        args = {"prompt": "Great", "candidates": [" a", " b"], "scores": [0.0, 1.0], "winner": 1, **bad}
        with pytest.raises(ValueError, match=match):
            log.log(**args)
    assert len(log) == 1  # nothing invalid was written


def _append(path, worker, n, acked=None):
    """Child process: append ``n`` decisions (forever when ``n`` is None), counting the committed ones."""
    log = QualityLog(path)
    i = 0
    while n is None or i < n:
        log.log(f"prompt {worker}-{i}", [f" draft {i}", f" better {i}" * 20], [0.1 * i, 0.2 * i], 1,
                sources=["writer", "improver"], versions={"worker": str(worker)})
        i += 1
        if acked is not None:
            acked.value = i


def _context():
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def test_two_processes_append_concurrently(tmp_path):
    path = tmp_path / "shared.sqlite"
    ctx = _context()
    procs = [ctx.Process(target=_append, args=(path, w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    log = QualityLog(path)
    frame = log.to_frame(decode=True)
    assert len(frame) == 100 and frame["id"].is_unique
    assert frame["version_worker"].value_counts().to_dict() == {"0": 50, "1": 50}
    assert log.integrity_check() == "ok"


def test_a_killed_writer_loses_at_most_the_decision_in_flight(tmp_path):
    path = tmp_path / "crash.sqlite"
    QualityLog(path)  # create the file first
    ctx = _context()
    acked = ctx.Value("i", 0, lock=False)
    proc = ctx.Process(target=_append, args=(path, 0, None, acked))
    proc.start()
    deadline = time.time() + 60
    while acked.value < 25 and time.time() < deadline and proc.is_alive():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up, no atexit: as a power cut of the process
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    committed = acked.value
    assert committed >= 25
    with sqlite3.connect(path) as con:  # a plain reader, as any tool would open it
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    frame = QualityLog(path).to_frame(decode=True)
    assert committed <= len(frame) <= committed + 1
    assert frame["id"].tolist() == list(range(1, len(frame) + 1))
    for _, row in frame.iterrows():  # every row whole: no half-written decision
        assert len(row["candidates"]) == len(row["scores"]) == len(row["sources"]) == 2
        assert row["chosen"] == row["candidates"][row["winner_index"]] and row["winner"] == "improver"


# --------------------------------------------------------------------------------------------
# Tables for the notebook, and the widget's pure parts
# --------------------------------------------------------------------------------------------
def fake_reward(texts):
    """A stand-in for the sentiment reward: a tensor of one score per text."""
    return torch.tensor([float(t.count("good")) - 0.01 * len(t) for t in texts])


def test_results_frame_and_compare_answers(stand_in_policy):
    from rlhf_helpers.guardrail import compare_answers, results_frame

    bot = Assistant(stand_in_policy, stand_in_policy, Judge(count_good), min_len=3, max_len=6)
    frame = results_frame(bot.respond_many(PROMPTS), fake_reward)
    assert len(frame) == 3 and {"writer_reward", "improver_reward", "judge_agrees"} <= set(frame.columns)
    rater_prefers = np.where(frame["improver_reward"] > frame["writer_reward"], "improver", "writer")
    assert (frame["judge_agrees"] == (frame["winner"] == rater_prefers)).all()
    table = compare_answers("The acting", {"a": stand_in_policy, "b": stand_in_policy}, Judge(count_good),
                            fake_reward, 3, 6, seed=2, best_of=("a", 3))
    assert table["method"].tolist() == ["a", "b", "best-of-3 (a)"]
    assert table.loc[0, "answer"] == table.loc[1, "answer"]  # same policy, same seed, same length
    assert table.loc[2, "judge score"] >= table.loc[0, "judge score"] - 1e-3  # its candidate 0 is that answer


def test_frontier_points_splits_names():
    import pandas as pd

    from rlhf_helpers.guardrail import frontier_points

    summary = pd.DataFrame({"reward": [0.0, 1.0, 2.0], "kl": [0.0, 1.0, 3.0]},
                           index=pd.Index(["SFT", "PPO step-5", "DPO β=0.1"], name="model"))
    curve = best_of_n_curve(np.zeros((2, 2)), np.ones((2, 2)), [1, 2])
    points = frontier_points(summary, curve)
    assert points["method"].tolist() == ["SFT", "PPO", "DPO", "best-of-n", "best-of-n"]
    assert points["point"].tolist() == ["", "step-5", "β=0.1", "n=1", "n=2"]
    assert math.isclose(points["kl"].iloc[-1], best_of_n_kl(2))


def test_answers_explorer_shows_the_table_or_the_reason():
    import pandas as pd

    from rlhf_helpers.widgets import answers_explorer

    def answer(prompt):
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        return pd.DataFrame({"method": ["SFT"], "answer": [prompt + " <b>ok</b>"]})

    box = answers_explorer(["This movie", "The plot"], answer)
    picker, text, button, result = box.children
    picker.value = "The plot"
    assert text.value == "The plot"
    button.click()
    assert "The plot" in result.value and "&lt;b&gt;ok" in result.value  # escaped, not rendered
    text.value = " "
    button.click()
    assert "Cannot answer" in result.value and "empty" in result.value
