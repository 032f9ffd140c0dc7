"""Held-out evaluation shared by every notebook: sample with a fixed seed, score with the sentiment
reward, measure KL to the SFT reference and repetition (to catch reward hacking)."""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .data import LengthSampler, load_imdb, make_prompts
from .generation import generate_responses
from .models import load_policy
from .ppo import kl_from_logits, logprobs_from_logits, query_response_batch


PROMPT_SEEDS = {"validation": 11, "test": 7}  # added to the preset's seed: each set its own shuffle


def heldout_prompt_table(preset, tokenizer, n: int | None = None, split: str = "test") -> pd.DataFrame:
    """``n`` prompts opening reviews no model trained on, with their source review's label.

    ``split="test"`` (the default) gives the prompts every reported number uses; ``split="validation"`` the
    prompts every tuning script and default is chosen on (tuning scripts cannot read the test prompts:
    :func:`data.forbid_test_set`). Columns ``prompt`` and ``label`` (1 = the prompt opens a positive review).
    The reviews are shuffled with a fixed seed, so the prompts open positive and negative reviews alike.
    """
    from .data import require_test_set

    if split not in PROMPT_SEEDS:
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
    if split == "test":
        require_test_set("the test prompts")
    n = n or preset.eval.n_prompts
    ds = make_prompts(load_imdb(preset)[split], tokenizer, seed=preset.seed + PROMPT_SEEDS[split], limit=n)
    return pd.DataFrame({"prompt": ds["prompt"], "label": ds["label"]})


def heldout_prompts(preset, tokenizer, n: int | None = None, with_labels: bool = False, split: str = "test"):
    """``n`` prompts (a list of strings) of ``split``; with ``with_labels=True`` the ``heldout_prompt_table``."""
    table = heldout_prompt_table(preset, tokenizer, n, split=split)
    return table if with_labels else list(table["prompt"])


def flip_rate(samples: pd.DataFrame, labels: Sequence[int]) -> pd.Series:
    """Per model: the share of prompts that open a *negative* review whose text the rater calls positive (the
    ``positive`` column: the scorer ``evaluate_policies`` was given as ``reward``).

    ``samples`` is the second table of :func:`evaluate_policies` (one row per model and prompt, in prompt order);
    ``labels`` are the prompts' source labels (``heldout_prompt_table(...)["label"]``). The overall positive
    fraction mixes in positive openings, which a writer can simply continue; this counts only the turned ones.
    """
    labels = np.asarray(labels)
    if not (labels == 0).any():
        raise ValueError("no prompt opens a negative review: pass the prompts' source labels (0 = negative)")
    rates = {}
    for name, group in samples.groupby("model", sort=False):
        if len(group) != len(labels):
            raise ValueError(f"{len(group)} samples for {name!r} but {len(labels)} labels: pass one label per prompt")
        rates[name] = float(group["positive"].to_numpy()[labels == 0].mean())
    return pd.Series(rates, name="flip_rate")


def _scoring_batches(model, queries, responses, pad_id: int, batch_size: int):
    """Batches of ``[query | response]`` as model inputs, with the response labels, their mask and the
    slice of logit positions that predicts them."""
    device = next(model.parameters()).device
    for s in range(0, len(queries), batch_size):
        ids, mask, pos, r_mask, Q = query_response_batch(queries[s:s + batch_size], responses[s:s + batch_size],
                                                         pad_id)
        R = r_mask.shape[1]
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device),
                  "use_cache": False}
        yield inputs, ids[:, Q:Q + R].to(device), r_mask, slice(Q - 1, Q + R - 1)


@torch.no_grad()
def sequence_logprobs(model, queries, responses, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Sum of log p(response token) under ``model`` for each query/response pair."""
    model.eval()
    out = []
    for inputs, labels, r_mask, positions in _scoring_batches(model, queries, responses, pad_id, batch_size):
        lp = logprobs_from_logits(model(**inputs).logits[:, positions], labels).cpu()
        out.append((lp * r_mask).sum(1))
    return torch.cat(out)


@torch.no_grad()
def sequence_kl(model, ref_model, queries, responses, pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Per-sample KL(model || ref) in nats for responses sampled from ``model`` (plain softmax, T = 1).

    At every response position it sums the *full* KL between the two next-token distributions, along the
    sampled path: the same expectation as the sampled log-ratio log p(y|x) - log p_ref(y|x), with less
    noise, and never negative (exactly 0 when the two models agree).
    """
    model.eval()
    ref_model.eval()
    out = []
    for inputs, _, r_mask, positions in _scoring_batches(model, queries, responses, pad_id, batch_size):
        kl = kl_from_logits(model(**inputs).logits[:, positions], ref_model(**inputs).logits[:, positions])
        out.append((kl.cpu() * r_mask).sum(1))
    return torch.cat(out)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams across the texts (low = the model repeats itself)."""
    grams = [tuple(w[i:i + n]) for t in texts for w in [t.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


WORD = re.compile(r"[a-z]+")
REAL_WORD_MIN_COUNT = 5


@lru_cache(maxsize=4)
def _real_words(preset_name: str) -> frozenset[str]:
    from .config import get_preset

    counts: Counter[str] = Counter()
    for text in load_imdb(get_preset(preset_name))["train"]["text"]:
        counts.update(WORD.findall(text.lower()))
    return frozenset(w for w, c in counts.items() if c >= REAL_WORD_MIN_COUNT)


def real_words(preset) -> frozenset[str]:
    """The words that count as real: lower-cased runs of letters a-z that occur at least 5 times in the
    preset's training reviews."""
    return _real_words(preset.name)


def real_word_rate(texts: Sequence[str], vocabulary: frozenset[str]) -> float:
    """Share of the words in ``texts`` that are real. A word is a lower-cased run of letters a-z (digits and
    punctuation are not words); it is real when it is in ``vocabulary`` (:func:`real_words`). The word-level
    writer's ``<unk>`` marker counts as the word "unk", which is not real: an unknown word is not a real one."""
    words = [w for t in texts for w in WORD.findall(t.lower())]
    return sum(w in vocabulary for w in words) / len(words) if words else float("nan")


def repetition_rate(texts: Sequence[str]) -> float:
    """Mean share of words in a text that repeat an earlier word of the same text."""
    rates = []
    for t in texts:
        words = t.lower().split()
        if words:
            rates.append(1 - len(set(words)) / len(words))
    return float(np.mean(rates)) if rates else 0.0


def judge_scores(judge, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(score, positive)`` per text from a ``SentimentReward``-like scorer (the rater, the auditor): its log-odds
    of POSITIVE (the score the RL methods are trained on), and whether POSITIVE is its top label."""
    from .rater import log_odds

    logits = judge.all_logits(list(texts))
    score = np.array([log_odds(row, judge.label) for row in logits], dtype=float)
    positive = np.array([max(row, key=row.get) == judge.label for row in logits], dtype=bool)
    return score, positive


def _intervals(name: str, values, rate: bool = False) -> dict[str, float]:
    """``{name_lo, name_hi}``: the 95 % interval (Wilson for a rate, bootstrap over prompts for a mean)."""
    from .stats import bootstrap_interval, wilson_interval

    values = np.asarray(values, dtype=float)
    lo, hi = wilson_interval(values.sum(), len(values)) if rate else bootstrap_interval(values)
    return {f"{name}_lo": lo, f"{name}_hi": hi}


def paired_comparison(samples: pd.DataFrame, a: str, b: str, column: str = "positive") -> dict[str, float]:
    """Method ``a`` minus method ``b`` on the same prompts (rows of :func:`evaluate_policies`' samples):
    the mean difference of ``column`` with its 95 % paired-bootstrap interval, McNemar's p for a yes/no column,
    and ``within_noise`` when the interval contains 0."""
    from .stats import mcnemar_p, paired_difference, within_noise

    xa = samples.loc[samples["model"] == a, column].to_numpy()
    xb = samples.loc[samples["model"] == b, column].to_numpy()
    diff, lo, hi = paired_difference(xa.astype(float), xb.astype(float))
    out = {"a": a, "b": b, "column": column, "difference": diff, "low": lo, "high": hi,
           "within_noise": within_noise(lo, hi)}
    if samples[column].dtype == bool:
        out["mcnemar_p"] = mcnemar_p(xa, xb)
    return out


CACHE_ENV = "RLHF_EVAL_CACHE"


def _folder_digest(folder: Path) -> str:
    """A digest of every file of a saved model (weights, config, tokenizer, metadata)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _shared_key(ref, prompts, min_len, max_len, seed, batch_size) -> str | None:
    """What every policy's kept evaluation in one ``evaluate_policies`` call depends on, as a digest (None: keep
    nothing): the reference's files, the prompts, lengths, seed and batch size, the torch version and thread
    count (float sums differ between them), and the package's sampling and scoring code itself (an edited
    ``generation.py`` starts afresh)."""
    if os.environ.get(CACHE_ENV, "1") == "0" or not isinstance(ref, (str, Path)):
        return None
    from . import generation, ppo

    h = hashlib.sha256()
    for part in (_folder_digest(Path(ref)), "\n".join(prompts), repr((min_len, max_len, seed, batch_size)),
                 torch.__version__, str(torch.get_num_threads())):
        h.update(part.encode() + b"\0")
    for source in (generation.__file__, ppo.__file__, __file__):
        h.update(Path(source).read_bytes())
    return h.hexdigest()


def _cache_key(m, shared: str | None, preset) -> Path | None:
    """Where the evaluation of policy ``m`` is kept, or None (keeping is off, or ``m`` is an in-memory model)."""
    if shared is None or not isinstance(m, (str, Path)):
        return None
    from .config import artifacts_home

    digest = hashlib.sha256((shared + _folder_digest(Path(m))).encode()).hexdigest()
    return artifacts_home() / preset.name / "evaluations" / f"{digest[:32]}.json"


def _read_cached(key: Path | None):
    if key is None or not key.is_file():
        return None
    data = json.loads(key.read_text())
    return data["texts"], np.asarray(data["kl"], dtype=np.float32)


def _write_cached(key: Path | None, texts, kl) -> None:
    if key is None:
        return
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"texts": list(texts), "kl": [float(x) for x in kl]}))
        os.replace(tmp, key)  # atomic: a notebook running beside this one reads all of it or nothing
    except OSError:  # a read-only artifacts folder: the evaluation is simply not kept
        pass


def evaluate_policies(models: Mapping[str, object], reward, ref, prompts: Sequence[str], min_len: int,
                      max_len: int, seed: int = 0, batch_size: int = 64,
                      judges: Mapping[str, object] | None = None, preset=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate several policies side by side on the same prompts, lengths and seed.

    ``models`` maps a name to a folder or a ``(model, tokenizer)`` pair; ``ref`` is the reference
    (usually the SFT policy) in the same form. Returns ``(summary, samples)`` DataFrames.
    ``reward`` is the scorer every policy is graded by first (the rater, in the notebooks). ``judges`` (optional)
    maps a short name to further ``SentimentReward``-like scorers (e.g. the auditor,
    ``{"auditor": load_auditor(preset)}``) that grade the *same* texts: each adds the summary
    columns ``reward_<name>`` and ``positive_fraction_<name>`` and the sample columns ``reward_<name>`` and
    ``positive_<name>``.

    Sampling a policy and measuring its KL is the slow part, and several notebooks evaluate the same saved
    policies on the same test prompts: each policy's texts and KL are kept under
    ``<RLHF_HOME>/<preset>/evaluations/`` and read back when everything they depend on is unchanged (see
    ``_cache_key``), so every notebook prints the same numbers as if it had sampled them itself.
    ``RLHF_EVAL_CACHE=0`` turns this off. The graders always score the texts afresh.
    """
    from .config import get_preset

    judges = dict(judges or {})
    preset = preset or get_preset()
    vocabulary = real_words(preset)
    shared = _shared_key(ref, prompts, min_len, max_len, seed, batch_size)
    ref_model = None  # loaded when a policy is sampled (not at all when every evaluation is kept)
    rows, samples = [], []
    for name, m in models.items():
        key = _cache_key(m, shared, preset)
        cached = _read_cached(key)
        if cached is not None:  # the same policy, reference, prompts, lengths and seed were sampled before
            texts, kl = cached
        else:
            model, tok = load_policy(m)
            if ref_model is None:
                ref_model, _ = load_policy(ref)
            queries = [torch.tensor(tok(p)["input_ids"], dtype=torch.long) for p in prompts]
            sampler = LengthSampler(min_len, max_len, seed=seed)
            lengths = [sampler() for _ in prompts]
            torch.manual_seed(seed)
            responses = generate_responses(model, tok, queries, lengths, batch_size=batch_size)
            texts = tok.batch_decode(responses, skip_special_tokens=True)
            kl = sequence_kl(model, ref_model, queries, responses, tok.pad_token_id).numpy()
            _write_cached(key, texts, kl)
        full = [p + r for p, r in zip(prompts, texts)]
        score, positive = judge_scores(reward, full)
        row = {"model": name, "reward": score.mean(), "reward_std": score.std(),
               "positive_fraction": positive.mean(), "kl": kl.mean(), "distinct_2": distinct_n(texts, 2),
               "repetition": repetition_rate(texts), "real_words": real_word_rate(texts, vocabulary),
               "n": len(prompts)}
        row.update(_intervals("positive_fraction", positive, rate=True), **_intervals("reward", score),
                   **_intervals("kl", kl))
        extra = {}
        for jname, judge in judges.items():
            extra[jname] = judge_scores(judge, full)
            row[f"reward_{jname}"] = extra[jname][0].mean()
            row[f"positive_fraction_{jname}"] = extra[jname][1].mean()
            row.update(_intervals(f"reward_{jname}", extra[jname][0]),
                       **_intervals(f"positive_fraction_{jname}", extra[jname][1], rate=True))
        rows.append(row)
        for i, (p, r, s, pz, k) in enumerate(zip(prompts, texts, score, positive, kl)):
            sample = {"model": name, "prompt": p, "response": r, "reward": s, "positive": bool(pz), "kl": k}
            for jname, (js, jp) in extra.items():
                sample[f"reward_{jname}"], sample[f"positive_{jname}"] = js[i], bool(jp[i])
            samples.append(sample)
    return pd.DataFrame(rows).set_index("model"), pd.DataFrame(samples)


def with_intervals(summary: pd.DataFrame, columns: Sequence[str] | None = None, percent: Sequence[str] = ()) -> pd.DataFrame:
    """A display copy of an :func:`evaluate_policies` summary: each column that has ``_lo``/``_hi`` companions
    becomes ``"value [low, high]"`` (the 95 % interval); columns in ``percent`` (rates) are shown in percent.
    Columns without an interval are rounded to 3 digits."""
    columns = list(columns or [c for c in summary.columns if not c.endswith(("_lo", "_hi"))])
    out = {}
    for col in columns:
        scale, digits = (100, 1) if col in percent else (1, 3)
        if f"{col}_lo" in summary.columns:
            out[col] = [f"{scale * v:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"
                        for v, lo, hi in zip(summary[col], summary[f"{col}_lo"], summary[f"{col}_hi"])]
        else:
            out[col] = [round(scale * v, digits) if isinstance(v, (int, float, np.floating)) else v for v in summary[col]]
    return pd.DataFrame(out, index=summary.index)
