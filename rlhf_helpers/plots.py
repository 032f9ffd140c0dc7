"""Matplotlib figures used by the notebooks (one place, so every notebook's plots look alike)."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _finish(axes, title: str = ""):
    """Title and tidy a row of panels; returns the axes."""
    if title:
        axes[0].figure.suptitle(title)
    axes[0].figure.tight_layout()
    return axes


def log_curve(log_history: Iterable[Mapping], key: str = "loss") -> pd.DataFrame:
    """``step``/``key`` rows from a trainer log history (entries without ``key`` are skipped)."""
    rows = [{"step": e.get("step"), key: e[key]} for e in log_history if key in e and e.get("step") is not None]
    return pd.DataFrame(rows, columns=["step", key])


def plot_curves(log_history: Iterable[Mapping], keys: Sequence[str] = ("loss",), title: str = "",
                ax=None):
    """Line plot of one or more logged quantities against the training step."""
    history = list(log_history)
    axes = ax if ax is not None else plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2))[1]
    axes = np.atleast_1d(axes)
    for a, key in zip(axes, keys):
        df = log_curve(history, key)
        a.plot(df["step"], df[key].astype(float), marker=".")
        a.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # steps are whole numbers: no 1.5 ticks
        a.set_xlabel("step")
        a.set_ylabel(key)
        a.grid(alpha=0.3)
    return _finish(axes, title)


def plot_reward_hist(groups: Mapping[str, Sequence[float]], title: str = "the rater's reward (log-odds of POSITIVE)",
                     bins: int = 30,
                     ax=None):
    """Overlaid histograms of rewards, one per named group (e.g. before/after)."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3.2))[1]
    values = [np.asarray(v, dtype=float) for v in groups.values()]
    lo = min(v.min() for v in values if len(v))
    hi = max(v.max() for v in values if len(v))
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else bins
    for (name, v) in zip(groups, values):
        ax.hist(v, bins=edges, alpha=0.55, label=f"{name} (mean {v.mean():.2f})")
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel(title)
    ax.set_ylabel("count")
    ax.legend()
    ax.figure.tight_layout()
    return ax


def plot_reward_vs_kl(points: pd.DataFrame, x: str = "kl", y: str = "reward", label: str = "method", ax=None,
                      annotate: str | None = None):
    """The reward-KL frontier: one colour per method, optional text labels on the points."""
    ax = ax if ax is not None else plt.subplots(figsize=(7, 4.5))[1]
    for name, grp in points.groupby(label, sort=False):
        grp = grp.sort_values(x)
        ax.plot(grp[x], grp[y], marker="o", ls="-" if len(grp) > 1 else "", label=name)
        if annotate:
            for _, row in grp.iterrows():
                ax.annotate(str(row[annotate]), (row[x], row[y]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xlabel("KL to the SFT reference (nats per response)")
    ax.set_ylabel("held-out reward from the rater (log-odds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_pairs_vs_margin(margins: Sequence[float], kept: Sequence[int], total: int | None = None,
                         chosen: float | None = None, ax=None):
    """How many comparison pairs survive each margin (the preset's margin marked by a dashed line)."""
    ax = ax if ax is not None else plt.subplots(figsize=(5.5, 3.2))[1]
    ax.plot(margins, kept, marker="o")
    if total is not None:
        ax.axhline(total, color="gray", lw=0.8, ls=":", label=f"prompts ({total})")
    if chosen is not None:
        ax.axvline(chosen, color="k", lw=0.8, ls="--", label=f"preset margin ({chosen:g})")
    ax.set_xlabel("margin: minimum reward gap best - worst")
    ax.set_ylabel("pairs kept")
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if total is not None or chosen is not None:
        ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_score_scatter(x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str = "", ax=None):
    """Scatter of two scores of the same texts, with their Pearson correlation in the title."""
    ax = ax if ax is not None else plt.subplots(figsize=(4.8, 4))[1]
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    r = np.corrcoef(x, y)[0, 1] if len(x) > 1 and x.std() > 0 and y.std() > 0 else float("nan")
    ax.scatter(x, y, s=12, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title + ': ' if title else ''}correlation r = {r:.2f}")
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax


def logged_keys(log_history: Iterable[Mapping], candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` a trainer actually logged (names differ between TRL versions), in the given order."""
    seen = {k for entry in log_history for k in entry}
    return [k for k in candidates if k in seen]


def plot_metric_bars(summary: pd.DataFrame, metrics: Sequence[str], title: str = "", axes=None):
    """One bar chart per metric column of a summary table indexed by model name (e.g. ``evaluate_policies``)."""
    axes = axes if axes is not None else plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2))[1]
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [str(i) for i in summary.index]
    for a, metric in zip(axes, metrics):
        a.bar(names, summary[metric].astype(float), color=[colours[i % len(colours)] for i in range(len(names))])
        a.axhline(0, color="k", lw=0.8)
        a.set_title(metric)
        a.tick_params(axis="x", rotation=45)
        a.grid(axis="y", alpha=0.3)
    return _finish(axes, title)


def plot_sweep(table: pd.DataFrame, x: str, metrics: Sequence[str], logx: bool = True, title: str = "", axes=None):
    """Metrics against a swept setting (e.g. DPO's beta), one panel per metric."""
    axes = axes if axes is not None else plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))[1]
    axes = np.atleast_1d(axes)
    table = table.sort_values(x)
    for a, metric in zip(axes, metrics):
        xs = table[x].astype(float).to_numpy()
        a.plot(xs, table[metric].astype(float), marker="o")
        if logx:
            from matplotlib.ticker import NullFormatter

            a.set_xscale("log")
            a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xticks(xs, [f"{v:g}" for v in xs])
        a.set_xlabel(x)
        a.set_ylabel(metric)
        a.grid(alpha=0.3)
    return _finish(axes, title)


# --------------------------------------------------------------------------------------------
# 06_guardrail: the quality log over time and best-of-n
# --------------------------------------------------------------------------------------------
def plot_quality_log(log: pd.DataFrame, window: int = 20, version: str = "version_release", winner: str = "improver",
                     axes=None, judge: str = "reward model"):
    """The guardrail's log over time: rolling win rate of ``winner`` and rolling score from the judge (played by
    ``judge``) per model, with every change of ``version`` (a new release) marked by a dashed line."""
    import json

    frame = log.reset_index(drop=True)
    decode = lambda v: json.loads(v) if isinstance(v, str) else v  # noqa: E731
    per_model = pd.DataFrame([dict(zip(decode(s), decode(sc))) for s, sc in zip(frame["sources"], frame["scores"])])
    x = np.arange(1, len(frame) + 1)
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(11, 3.4))[1]
    wins = (frame["winner"] == winner).astype(float).rolling(window, min_periods=1).mean()
    axes[0].plot(x, wins, color="C1", label=f"{winner} win rate")
    axes[0].axhline(0.5, color="gray", ls=":", lw=1)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_ylabel(f"win rate (rolling {window})")
    for col in per_model:
        axes[1].plot(x, per_model[col].rolling(window, min_periods=1).mean(), label=f"{col}")
    axes[1].plot(x, frame["winner_score"].rolling(window, min_periods=1).mean(), color="k", lw=2,
                 label="chosen answer")
    axes[1].set_ylabel(f"judge's score: {judge} (rolling {window})")
    if version in frame:
        starts = np.flatnonzero(frame[version].ne(frame[version].shift()).to_numpy())
        for a in axes:
            for s in starts:
                a.axvline(x[s] - 0.5, color="gray", ls="--", lw=1)
                a.annotate(str(frame[version].iloc[s]), (x[s], 1), xycoords=("data", "axes fraction"),
                           xytext=(3, -12), textcoords="offset points", fontsize=8)
    for a in axes:
        a.set_xlabel("decision (in logging order)")
        a.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        a.grid(alpha=0.3)
        # the legend goes under the panel, so it never hides a line (the writer's often runs low, where a
        # legend inside the panel would sit)
        a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    axes[0].figure.tight_layout()
    return axes


def plot_best_of_n(curve: pd.DataFrame, axes=None, judge: str = "reward model", grader: str = "rater"):
    """Best-of-n as n grows (``best_of_n_curve``): the judge's score of its pick (left), and the grader's score of
    that pick next to the grader's own favourite among the same n (right); n on a log scale."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(10, 3.2))[1]
    axes[0].plot(curve["n"], curve["judge_score"], marker="o", color="C2", label=f"{judge}'s score of its pick")
    axes[1].plot(curve["n"], curve["reward"], marker="o", color="C0", label=f"the {judge}'s pick")
    axes[1].plot(curve["n"], curve["best_possible"], marker="o", ls="--", color="C3",
                 label=f"the {grader}'s own pick (best possible)")
    axes[0].set_ylabel(f"{judge} score")
    axes[1].set_ylabel(f"{grader}'s score of the pick")
    for a in axes:
        a.set_xscale("log", base=2)
        a.set_xticks(list(curve["n"]), [str(n) for n in curve["n"]])
        a.set_xlabel("n (candidates per prompt)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    axes[0].figure.tight_layout()
    return axes


# --------------------------------------------------------------------------------------------
# 00_setup_and_tour: who learns from what, and who grades what
# --------------------------------------------------------------------------------------------
ROLE_COLOURS = {"rater": "#cfe2f3", "reward model": "#fce5cd", "auditor": "#d9ead3"}


def plot_model_roles(ax=None):
    """The series' models as a small diagram: solid arrows "learns from" (data or a model teaching a model, or
    a model training a policy), dashed arrows "grades". Returns the figure.

    The three models that score text, one name each everywhere: **the rater** (the IMDB classifier: the reward
    PPO, GRPO and RLOO train against, and the ranker of DPO's pairs), **the reward model** (learned from the
    rater's comparisons: best-of-n in 06, PPO against the reward model) and **the auditor** (Rotten Tomatoes:
    never trained against, never used to choose anything, it only grades the test set)."""
    from matplotlib.lines import Line2D

    ax = ax if ax is not None else plt.subplots(figsize=(11, 5.4))[1]
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6.2)
    ax.axis("off")

    def box(x, y, text, colour="white", bold=False):
        return ax.text(x, y, text, ha="center", va="center", fontsize=9, fontweight="bold" if bold else "normal",
                       bbox=dict(boxstyle="round,pad=0.45", facecolor=colour, edgecolor="0.35", linewidth=1))

    def arrow(a, b, label="", grades=False, offset=(0.0, 0.2)):
        """From box ``a`` to box ``b`` (centre to centre, clipped at the boxes), its label beside the middle."""
        ax.annotate("", xy=(0.5, 0.5), xytext=(0.5, 0.5), xycoords=b, textcoords=a, annotation_clip=False,
                    arrowprops=dict(arrowstyle="-|>", color="0.2", lw=1.3, ls="--" if grades else "-",
                                    shrinkA=2, shrinkB=2, patchA=a.get_bbox_patch(), patchB=b.get_bbox_patch()))
        if label:
            (xa, ya), (xb, yb) = a.get_position(), b.get_position()
            ax.text((xa + xb) / 2 + offset[0], (ya + yb) / 2 + offset[1], label, ha="center", va="center",
                    fontsize=8, style="italic", color="0.25")

    ax.text(1.2, 6.0, "data", ha="center", fontsize=9, color="0.4")
    ax.text(4.6, 6.0, "models", ha="center", fontsize=9, color="0.4")
    ax.text(8.9, 6.0, "what each model is used for", ha="center", fontsize=9, color="0.4")
    reviews = box(1.2, 5.1, "IMDB reviews\n(the text)", "0.93")
    labels = box(1.2, 3.5, "IMDB labels\n(positive / negative)", "0.93")
    snippets = box(1.2, 0.8, "Rotten Tomatoes\nsnippets + labels", "0.93")
    writer = box(4.6, 5.1, "the SFT writer\n(the policy, 01)")
    rater = box(4.6, 3.5, "the rater\nIMDB classifier (02)", ROLE_COLOURS["rater"], bold=True)
    reward_model = box(4.6, 2.05, "the reward model\n(02)", ROLE_COLOURS["reward model"], bold=True)
    auditor = box(4.6, 0.8, "the auditor\nbag of words (05)", ROLE_COLOURS["auditor"], bold=True)
    online = box(8.9, 4.75, "PPO, GRPO, RLOO\ntrain against it (03, 05)")
    dpo = box(8.9, 3.5, "DPO's pairs\nranked by it (04)")
    uses_rm = box(8.9, 2.05, "best-of-n picks with it (06);\nPPO against the reward model")
    test = box(8.9, 0.8, "the test set:\nevery policy's answers")

    arrow(reviews, writer, "learns from")
    arrow(labels, rater, "learns from")
    arrow(snippets, auditor, "learns from")
    arrow(rater, reward_model, "its comparisons", offset=(0.75, 0.0))
    arrow(rater, online, "reward", offset=(0.0, 0.28))
    arrow(rater, dpo, "ranks")
    arrow(reward_model, uses_rm, "reward")
    arrow(auditor, test, "grades only", grades=True)
    ax.legend(handles=[Line2D([], [], color="0.2", lw=1.3, label="learns from / trains"),
                       Line2D([], [], color="0.2", lw=1.3, ls="--", label="grades (never trained against)")],
              loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    ax.set_title("Who learns from what, and who grades what: the rater, the reward model and the auditor",
                 fontsize=10)
    ax.figure.tight_layout()
    return ax.figure
