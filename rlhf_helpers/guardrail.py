"""Step 5: the trained models as a guarded assistant (the article's business case).

Model-1 (the *writer*, the SFT policy) drafts an answer, Model-2 (the *improver*, an RLHF-tuned policy)
writes its own, and Model-3 (the *judge*, played by the reward model) scores both, keeps the best and writes
the decision to a :class:`QualityLog`, so the quality of both models can be tracked and they can be retrained.
The same judge also powers best-of-n sampling, the simplest way to spend a reward model. The rater grades what
the judge picked (it never picks), and the auditor grades it again (:mod:`rlhf_helpers.auditor`).
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .config import Preset, artifacts_home, get_preset
from .data import LengthSampler
from .generation import sample_texts
from .models import load_policy  # re-exported: notebook 06 imports it from here

WRITER, IMPROVER = "writer", "improver"
CONNECTOR = " In other words,"


# --------------------------------------------------------------------------------------------
# 5.1 The judge (Model-3)
# --------------------------------------------------------------------------------------------
def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("the prompt is empty (or only whitespace): give the assistant some text to answer")
    return prompt


def _check_candidates(candidates) -> list[str]:
    if isinstance(candidates, str):
        raise TypeError("candidates must be a list of strings, not one string")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidates to judge: pass at least one")
    if not all(isinstance(c, str) for c in candidates):
        raise TypeError("every candidate must be a string")
    return candidates


def artifact_label(folder: str | Path) -> str:
    """A short name for a model folder: ``.../ppo/model`` -> ``ppo``, ``.../snapshots/step-5`` -> ``step-5``."""
    p = Path(str(folder))
    return p.parent.name if p.name == "model" else p.name


class Judge:
    """Model-3, the judge of the loop: scores prompt + candidate and picks the best. In notebook 06 the reward
    model plays it; the rater can too (``kind="rater"``), for a judge that agrees with the grader by design.

    ``scorer`` is a reward-model folder, a ``(model, tokenizer)`` pair of a one-output classifier, a
    ``SentimentReward`` (the rater), or any function mapping a list of texts to a list of numbers.
    """

    def __init__(self, scorer, name: str | None = None, max_length: int = 64, batch_size: int = 64,
                 device=None):
        from .rater import SentimentReward
        from .reward_model import load_reward_model, reward_model_scores

        self.max_length, self.batch_size = max_length, batch_size
        if isinstance(scorer, (str, Path)):
            self.name = name or artifact_label(scorer)
            scorer = load_reward_model(scorer)
        if isinstance(scorer, SentimentReward):
            self.name = name or "rater"
            self._fn = lambda texts: scorer(texts).tolist()
        elif isinstance(scorer, tuple) and len(scorer) == 2:
            model, tok = scorer
            if device is not None:
                model.to(device)
            self.name = getattr(self, "name", None) or name or "reward_model"
            self._fn = lambda texts: reward_model_scores(model, tok, texts, max_length=self.max_length,
                                                         batch_size=self.batch_size).tolist()
        elif callable(scorer):
            self.name = name or getattr(scorer, "__name__", "judge")
            self._fn = lambda texts: list(scorer(texts))
        else:
            raise TypeError(f"cannot judge with a {type(scorer).__name__}: pass a reward-model folder, "
                            "a (model, tokenizer) pair, a SentimentReward (the rater) or a function texts -> scores")

    @classmethod
    def from_preset(cls, preset: Preset | None = None, kind: str = "reward_model", device=None) -> "Judge":
        """The preset's reward model (``kind="reward_model"``) or its rater (``kind="rater"``; ``"sentiment"``, the
        old name, still works) as the judge."""
        from .rater import sentiment_reward
        from .reward_model import ensure_reward_model

        preset = preset or get_preset()
        if kind == "reward_model":
            return cls(ensure_reward_model(preset), name="reward_model", max_length=preset.reward_model.max_length,
                       device=device)
        if kind in ("rater", "sentiment"):
            return cls(sentiment_reward(preset), name="rater")
        raise ValueError(f"kind must be 'reward_model' or 'rater', got {kind!r}")

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """The judge's score of each full text (prompt + answer); raises on NaN/inf."""
        texts = list(texts)
        if not texts:
            return []
        scores = [float(s) for s in self._fn(texts)]
        if len(scores) != len(texts):
            raise ValueError(f"the judge returned {len(scores)} scores for {len(texts)} texts")
        if not all(math.isfinite(s) for s in scores):
            raise ValueError("the judge returned NaN/inf; the reward model looks broken (rebuild it)")
        return scores

    def score(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Score every candidate answer to ``prompt`` (the judge reads prompt + candidate)."""
        candidates = _check_candidates(candidates)
        return self.score_texts([prompt + c for c in candidates])

    def pick(self, prompt: str, candidates: Sequence[str]) -> tuple[int, list[float]]:
        """Index of the best-scoring candidate (the first one on a tie) and all scores."""
        scores = self.score(prompt, candidates)
        return int(np.argmax(scores)), scores

    def __repr__(self) -> str:
        return f"Judge({self.name!r})"


# --------------------------------------------------------------------------------------------
# 5.2 Best-of-n: sample n answers, let the judge keep one
# --------------------------------------------------------------------------------------------
@dataclass
class BestOfN:
    """One best-of-n decision: every candidate with its judge score and the index kept."""

    prompt: str
    text: str
    index: int
    candidates: list[str]
    scores: list[float]


def best_of_n(model, tokenizer, prompt_or_prompts: str | Sequence[str], n: int, judge: Judge, min_len: int,
              max_len: int, seed: int = 0, batch_size: int = 64) -> BestOfN | list[BestOfN]:
    """Sample ``n`` answers per prompt and let the judge keep one (the first best on a tie).

    Candidate ``j`` of every prompt comes from ``sample_texts`` with seed ``seed + j`` (lengths from a
    ``LengthSampler`` seeded the same way). So ``n == 1`` is exactly plain sampling under ``seed``, and the
    first ``m`` candidates of best-of-``n`` are exactly the candidates of best-of-``m``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    single = isinstance(prompt_or_prompts, str)
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    if not prompts:
        raise ValueError("no prompts given")
    for p in prompts:
        _check_prompt(p)
    columns = [sample_texts(model, tokenizer, prompts, LengthSampler(min_len, max_len, seed=seed + j), seed=seed + j,
                            batch_size=batch_size) for j in range(n)]
    texts = [[col[i] for col in columns] for i in range(len(prompts))]
    flat = judge.score_texts([p + t for p, cands in zip(prompts, texts) for t in cands])
    out = []
    for i, (p, cands) in enumerate(zip(prompts, texts)):
        sc = flat[i * n:(i + 1) * n]
        k = int(np.argmax(sc))
        out.append(BestOfN(prompt=p, text=cands[k], index=k, candidates=cands, scores=sc))
    return out[0] if single else out


def best_of_n_kl(n: int | np.ndarray) -> float | np.ndarray:
    """log n - (n - 1) / n nats: the usual formula for KL(best-of-n || base), which is an *upper bound* on it
    (Beirami et al., 2024), close when no answer is likely to be drawn twice."""
    n = np.asarray(n, dtype=float)
    if np.any(n < 1):
        raise ValueError("n must be >= 1")
    kl = np.log(n) - (n - 1) / n
    return float(kl) if kl.ndim == 0 else kl


def best_of_n_curve(judge_scores, grader_scores, ns: Sequence[int]) -> pd.DataFrame:
    """Best-of-n for several n from one draw of ``max(ns)`` candidates: for each n the judge's favourite of
    the first n (exactly best-of-n, since ``best_of_n`` draws candidate j with seed ``seed + j``).

    ``judge_scores`` (the judge that picks: the reward model in notebook 06) and ``grader_scores`` (the model
    that grades the picks: the rater, or the auditor) are (prompts x candidates) arrays. Returns one row per n
    with the judge's score of its pick (``judge_score``), the grader's score of that pick (``reward``), the
    grader's score of its own favourite among the first n (``best_possible``: what a judge that agreed with the
    grader would get) and the KL bound ``best_of_n_kl(n)``.
    """
    j, t = np.asarray(judge_scores, dtype=float), np.asarray(grader_scores, dtype=float)
    if j.shape != t.shape or j.ndim != 2:
        raise ValueError(f"need two (prompts x candidates) arrays of one shape, got {j.shape} and {t.shape}")
    rows = []
    for n in ns:
        if not 1 <= n <= j.shape[1]:
            raise ValueError(f"n={n} but only {j.shape[1]} candidates per prompt were drawn")
        pick = j[:, :n].argmax(1)
        rows.append({"n": int(n), "judge_score": j[:, :n].max(1).mean(),
                     "reward": t[np.arange(len(t)), pick].mean(), "best_possible": t[:, :n].max(1).mean(),
                     "kl": best_of_n_kl(n)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 5.3 The assistant: writer -> improver -> judge
# --------------------------------------------------------------------------------------------
@dataclass
class Candidate:
    source: str  # "writer" or "improver"
    text: str
    score: float


@dataclass
class AssistantResult:
    """One answered prompt: the text sent out, which model wrote it, and every candidate with its score."""

    prompt: str
    text: str
    winner: str
    candidates: list[Candidate]
    draft_in_context: bool = False
    improver_context: str = ""

    @property
    def scores(self) -> dict[str, float]:
        return {c.source: c.score for c in self.candidates}

    def table(self) -> pd.DataFrame:
        """The candidates as a small table, the chosen one marked."""
        return pd.DataFrame([{"model": c.source, "answer": c.text, "judge score": round(c.score, 3),
                              "chosen": c.source == self.winner} for c in self.candidates])


class Assistant:
    """Writer drafts, improver writes its own answer (optionally reading the draft), judge keeps the best.

    ``writer``/``improver``: a model folder or a ``(model, tokenizer)`` pair. With ``draft_in_context`` the
    improver is prompted with ``prompt + draft + connector`` and continues from there: the nearest thing to
    "critique and improve" a small language model (that was never taught to follow instructions) can do.
    Every decision goes to ``log`` (a :class:`QualityLog`) when one is given, with ``versions``.
    """

    def __init__(self, writer, improver, judge: Judge, log: "QualityLog | None" = None,
                 min_len: int | None = None, max_len: int | None = None, draft_in_context: bool = False,
                 connector: str = CONNECTOR, seed: int = 0, versions: Mapping[str, str] | None = None,
                 device=None):
        preset = get_preset()
        self.min_len = preset.ppo.min_len if min_len is None else min_len
        self.max_len = preset.ppo.max_len if max_len is None else max_len
        LengthSampler(self.min_len, self.max_len)  # validates
        self.writer = load_policy(writer, device)
        self.improver = load_policy(improver, device)
        self.judge, self.log = judge, log
        self.draft_in_context, self.connector, self.seed = draft_in_context, connector, seed
        self.versions = {WRITER: artifact_label(writer) if isinstance(writer, (str, Path)) else WRITER,
                         IMPROVER: artifact_label(improver) if isinstance(improver, (str, Path)) else IMPROVER,
                         "judge": judge.name, **(versions or {})}

    def respond_many(self, prompts: Sequence[str]) -> list[AssistantResult]:
        """Answer a batch of prompts (batched sampling; one logged decision per prompt)."""
        prompts = [_check_prompt(p) for p in prompts]
        if not prompts:
            return []
        lengths = LengthSampler(self.min_len, self.max_len, seed=self.seed)
        drafts = sample_texts(*self.writer, prompts, lengths, seed=self.seed)
        contexts = [p + d + self.connector if self.draft_in_context else p for p, d in zip(prompts, drafts)]
        lengths = LengthSampler(self.min_len, self.max_len, seed=self.seed + 1)
        improved = sample_texts(*self.improver, contexts, lengths, seed=self.seed + 1)
        results = []
        for p, d, ctx, imp in zip(prompts, drafts, contexts, improved):
            scores = self.judge.score(p, [d, imp])
            cands = [Candidate(WRITER, d, scores[0]), Candidate(IMPROVER, imp, scores[1])]
            best = cands[int(np.argmax(scores))]
            result = AssistantResult(prompt=p, text=best.text, winner=best.source, candidates=cands,
                                     draft_in_context=self.draft_in_context,
                                     improver_context=ctx if self.draft_in_context else "")
            if self.log is not None:
                self.log.log_result(result, versions=self.versions)
            results.append(result)
        return results

    def respond(self, prompt: str) -> AssistantResult:
        """Answer one prompt: draft, improve, judge, log."""
        return self.respond_many([prompt])[0]


def results_frame(results: Sequence[AssistantResult], reward=None) -> pd.DataFrame:
    """One row per answered prompt; with ``reward`` (the rater) also the rater's reward of both answers and
    whether the judge (the reward model) picked the one the rater prefers."""
    rows = [{"prompt": r.prompt, "writer": r.candidates[0].text, "improver": r.candidates[1].text,
             "writer_score": r.candidates[0].score, "improver_score": r.candidates[1].score, "winner": r.winner}
            for r in results]
    frame = pd.DataFrame(rows)
    if reward is not None and len(frame):
        for who in (WRITER, IMPROVER):
            frame[f"{who}_reward"] = reward([p + t for p, t in zip(frame["prompt"], frame[who])]).tolist()
        rater_prefers = np.where(frame["improver_reward"] > frame["writer_reward"], IMPROVER, WRITER)
        frame["judge_agrees"] = frame["winner"] == rater_prefers
    return frame


def compare_answers(prompt: str, policies: Mapping[str, object], judge: Judge, reward, min_len: int, max_len: int,
                    seed: int = 0, best_of: tuple[str, int] | None = None) -> pd.DataFrame:
    """Every policy's answer to one prompt (same seed and length for all), with the judge's score and the
    rater's reward (``reward``: the rater); ``best_of=(name, n)`` adds best-of-n from that policy."""
    _check_prompt(prompt)
    length = LengthSampler(min_len, max_len, seed=seed)()
    rows = []
    for name, m in policies.items():
        text = sample_texts(*load_policy(m), [prompt], length, seed=seed)[0]
        rows.append({"method": name, "answer": text})
    if best_of is not None:
        name, n = best_of
        bon = best_of_n(*load_policy(policies[name]), prompt, n, judge, length, length, seed=seed)
        rows.append({"method": f"best-of-{n} ({name})", "answer": bon.text})
    frame = pd.DataFrame(rows)
    frame["judge score"] = judge.score(prompt, list(frame["answer"]))
    frame["rater's reward"] = reward([prompt + a for a in frame["answer"]]).tolist()
    return frame.round(3)


def frontier_policies(preset: Preset | None = None, dpo_betas: Sequence[float] = (),
                      online: bool = True) -> dict[str, Path]:
    """Every trained policy for the reward-KL frontier, named ``"<method>[ <point>]"``: SFT, each PPO snapshot
    (``PPO step-N``) and ``PPO final``, each DPO round (``DPO round 1``, ``DPO round 2``, ...), ``DPO β=b`` for
    each extra beta (round 1), GRPO and RLOO (each built if missing)."""
    from .dpo import ensure_dpo, ensure_dpo_rounds
    from .grpo import ensure_grpo, ensure_rloo
    from .ppo import ensure_ppo
    from .sft import ensure_sft

    preset = preset or get_preset()
    out: dict[str, Path] = {"SFT": Path(ensure_sft(preset))}
    ppo = Path(ensure_ppo(preset))
    snaps = sorted((ppo / "snapshots").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for snap in snaps:
        out[f"PPO {snap.name}"] = snap
    out["PPO final"] = ppo
    for r, folder in ensure_dpo_rounds(preset).items():
        out[f"DPO round {r}"] = Path(folder)
    for b in dpo_betas:
        out[f"DPO β={b:g}"] = Path(ensure_dpo(preset, beta=b))
    if online:
        out["GRPO"] = Path(ensure_grpo(preset))
        out["RLOO"] = Path(ensure_rloo(preset))
    return out


def frontier_points(summary: pd.DataFrame, curve: pd.DataFrame | None = None, reward: str = "reward") -> pd.DataFrame:
    """``method``/``point``/``kl``/``reward`` rows for ``plot_reward_vs_kl``: the policies evaluated by
    ``evaluate_policies`` (names ``"<method> <point>"``, their ``reward`` column: the rater's, or e.g.
    ``"reward_auditor"`` for the auditor) plus the best-of-n curve (at its KL bound; its ``reward`` graded by the
    same model)."""
    rows = [{"method": name.split(" ", 1)[0], "point": name.split(" ", 1)[1] if " " in name else "",
             "kl": r["kl"], "reward": r[reward]} for name, r in summary.iterrows()]
    if curve is not None:
        rows += [{"method": "best-of-n", "point": f"n={int(r['n'])}", "kl": r["kl"], "reward": r["reward"]}
                 for _, r in curve.iterrows()]
    return pd.DataFrame(rows)


def dominated_by(points: pd.DataFrame, baseline: str = "best-of-n") -> pd.DataFrame:
    """For each trained policy in ``frontier_points`` rows: its KL and reward, and the ``baseline`` points (e.g.
    best-of-n's ``n=8``) that reach at least its reward at no more KL, i.e. dominate it on the frontier."""
    base = points[points["method"] == baseline]
    rows = []
    for _, p in points[~points["method"].isin([baseline, "SFT"])].iterrows():
        better = base[(base["kl"] <= p["kl"]) & (base["reward"] >= p["reward"])]
        rows.append({"policy": f"{p['method']} {p['point']}".strip(), "kl": p["kl"], "reward": p["reward"],
                     f"dominated by {baseline}": ", ".join(better["point"]) or "-"})
    return pd.DataFrame(rows).set_index("policy")


def auditor_gap(summary: pd.DataFrame, auditor: str = "auditor", baseline: str = "SFT",
                names: tuple[str, str] = ("rater", "auditor")) -> pd.DataFrame:
    """Each policy's positive fraction under the rater it was trained against (``positive_fraction``) and under
    the auditor (``positive_fraction_<auditor>``), the gain of each over ``baseline`` in percentage points, and
    ``kept``: the share of the rater's gain that the auditor confirms (NaN without a gain under the rater)."""
    col = f"positive_fraction_{auditor}"
    if col not in summary:
        raise KeyError(f"{col!r} is not in the summary: pass judges={{{auditor!r}: ...}} to evaluate_policies")
    first, second = 100 * summary["positive_fraction"], 100 * summary[col]
    gain1, gain2 = first - first[baseline], second - second[baseline]
    kept = (gain2 / gain1).where(gain1 > 0)
    return pd.DataFrame({f"% positive, {names[0]}": first, f"% positive, {names[1]}": second,
                         f"gain, {names[0]}": gain1, f"gain, {names[1]}": gain2, "kept": kept,
                         "kl": summary["kl"]})


judge_gap = auditor_gap  # the old name


# --------------------------------------------------------------------------------------------
# 5.4 The quality log: every judged decision, in SQLite
# --------------------------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id            INTEGER PRIMARY KEY,
    logged_at     TEXT    NOT NULL,
    prompt        TEXT    NOT NULL,
    candidates    TEXT    NOT NULL,
    sources       TEXT    NOT NULL,
    scores        TEXT    NOT NULL,
    winner        TEXT    NOT NULL,
    winner_index  INTEGER NOT NULL,
    winner_score  REAL    NOT NULL,
    chosen        TEXT    NOT NULL,
    versions      TEXT    NOT NULL
)
"""
JSON_COLUMNS = ("candidates", "sources", "scores", "versions")


def default_log_path(preset: Preset | None = None) -> Path:
    """``<RLHF_HOME>/<preset>/quality_log.sqlite``."""
    preset = preset or get_preset()
    return artifacts_home() / preset.name / "quality_log.sqlite"


class QualityLog:
    """Append-only SQLite log of judged decisions: the guardrail's memory of how each model did.

    One transaction per decision, WAL journal (readers never block the writer; a killed process loses at
    most the decision it was writing) and a busy timeout so several processes can append to one file.
    Keep the file on a local disk: WAL needs shared memory, which network file systems do not give.
    """

    def __init__(self, path: str | Path | None = None, preset: Preset | None = None, timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_log_path(preset)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(50):  # two processes may create the file at the same moment
            try:
                with closing(self._connect()) as con:
                    if con.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                        raise sqlite3.OperationalError(f"could not switch {self.path} to WAL mode")
                    con.execute(SCHEMA)
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 49:
                    raise
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)  # we BEGIN ourselves
        con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        con.execute("PRAGMA synchronous = FULL")
        return con

    def log(self, prompt: str, candidates: Sequence[str], scores: Sequence[float], winner: int | str,
            sources: Sequence[str] | None = None, versions: Mapping[str, str] | None = None) -> int:
        """Append one decision (``winner``: index or source name of the kept candidate); returns its row id."""
        _check_prompt(prompt)
        candidates = _check_candidates(candidates)
        scores = [float(s) for s in scores]
        if len(scores) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(scores)} scores")
        if not all(math.isfinite(s) for s in scores):
            raise ValueError("a score is NaN or infinite; the judge is broken, so nothing was logged")
        sources = [str(s) for s in sources] if sources is not None else [f"candidate-{i}" for i in range(len(scores))]
        if len(sources) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(sources)} sources")
        if isinstance(winner, str):
            if winner not in sources:
                raise ValueError(f"winner {winner!r} is not one of the sources {sources}")
            index = sources.index(winner)
        elif isinstance(winner, (int, np.integer)) and 0 <= winner < len(candidates):
            index = int(winner)
        else:
            raise ValueError(f"winner must be a source name or an index below {len(candidates)}, got {winner!r}")
        versions = {str(k): str(v) for k, v in (versions or {}).items()}
        text = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)  # noqa: E731 (readable in any tool)
        row = (datetime.now(timezone.utc).isoformat(timespec="microseconds"), prompt, text(candidates),
               text(sources), text(scores), sources[index], index, scores[index], candidates[index], text(versions))
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")  # take the write lock now (waits up to the busy timeout)
            try:
                cur = con.execute("INSERT INTO decisions (logged_at, prompt, candidates, sources, scores, winner, "
                                  "winner_index, winner_score, chosen, versions) VALUES (?,?,?,?,?,?,?,?,?,?)", row)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return int(cur.lastrowid)

    def log_result(self, result: AssistantResult, versions: Mapping[str, str] | None = None) -> int:
        """Append an :class:`AssistantResult`."""
        return self.log(result.prompt, [c.text for c in result.candidates], [c.score for c in result.candidates],
                        result.winner, sources=[c.source for c in result.candidates], versions=versions)

    def to_frame(self, decode: bool = False) -> pd.DataFrame:
        """Every decision as a DataFrame (JSON text columns; ``decode=True`` parses them and adds one
        ``version_<name>`` column per model version)."""
        with closing(self._connect()) as con:
            frame = pd.read_sql_query("SELECT * FROM decisions ORDER BY id", con)
        frame["logged_at"] = pd.to_datetime(frame["logged_at"], format="ISO8601")
        if decode:
            for col in JSON_COLUMNS:
                frame[col] = frame[col].map(json.loads)
            keys = sorted({k for v in frame["versions"] for k in v})
            for k in keys:
                frame[f"version_{k}"] = frame["versions"].map(lambda v, k=k: v.get(k))
        return frame

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's own check of the file: ``"ok"`` when nothing is corrupt."""
        with closing(self._connect()) as con:
            return str(con.execute("PRAGMA integrity_check").fetchone()[0])

    def clear(self) -> None:
        """Delete every decision (one transaction); for demos and tests, never in production."""
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM decisions")
            con.execute("COMMIT")

    def __repr__(self) -> str:
        return f"QualityLog({str(self.path)!r})"
