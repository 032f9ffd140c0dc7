"""The report's per-notebook times (from nbclient's cell timestamps) and quality bars."""
import json

import pandas as pd

from rlhf_helpers.report import notebook_time_table, notebook_times, quality_bar_table, quality_bars


def _nb(path, cells):
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    for src, start, end in cells:
        ex = {} if start is None else {"iopub.status.busy": start, "iopub.execute_input": start,
                                       "shell.execute_reply": end, "iopub.status.idle": end}
        nb["cells"].append({"cell_type": "code", "source": src, "metadata": {"execution": ex}, "outputs": [],
                            "execution_count": 1})
    nb["cells"].append({"cell_type": "markdown", "source": "# title", "metadata": {}})
    path.write_text(json.dumps(nb))


def test_notebook_times_from_cell_metadata(tmp_path):
    _nb(tmp_path / "00_setup.ipynb", [("import x", "2026-11-28T10:00:00.000Z", "2026-11-28T10:00:02.000Z"),
                                      ("train()\nmore", "2026-11-28T10:00:03.000Z", "2026-11-28T10:01:33.500Z")])
    _nb(tmp_path / "01_sft.ipynb", [("a = 1", "2026-11-28T10:02:00Z", "2026-11-28T10:02:10Z"),
                                    ("skipped solution", None, None)])
    (tmp_path / "notes.ipynb").write_text("{}")  # not a numbered notebook: ignored
    times = notebook_times(tmp_path)
    assert [t.name for t in times] == ["00_setup", "01_sft"]
    assert abs(times[0].seconds - 93.5) < 1e-6 and abs(times[0].cells_seconds - 92.5) < 1e-6
    assert times[0].slowest == ("train()", 90.5) and times[1].cells == 1
    table = notebook_time_table(times)
    assert "| 00_setup | 1.6 min | 2 |" in table and "**all** | **1.7 min**" in table


def test_quality_bars_met_and_not_met():
    metrics = {"sft": {"held_out_perplexity": 140.2, "train_seconds": 230.0},
               "classifier": {"test_accuracy": 0.84, "train_seconds": 170.0},
               "reward_model": {"heldout_pairwise_accuracy": 0.81}}
    heldout = pd.DataFrame({"positive_fraction": [0.40, 0.80, 0.75, 0.70, 0.70, 0.72],
                            "kl": [0, 6.0, 7.9, 3.0, 9.0, 4.0],
                            "distinct_2": [0.90, 0.80, 0.75, 0.85, 0.85, 0.60],
                            "real_words": [0.975, 0.98, 0.97, 0.98, 0.98, 0.99],
                            "gain_lo": [float("nan"), 35.0, 29.0, -0.5, 26.0, 27.0]},
                           index=pd.Index(["sft", "ppo", "dpo", "grpo", "rloo", "dpo_x"], name="model"))
    bars = {b.what: b for b in quality_bars(metrics, heldout, total_seconds=1000)}
    assert bars["SFT held-out perplexity (per token)"].met is True
    assert bars["SFT writer: real words (test answers)"].met is True
    assert bars["rater (classifier) IMDB test accuracy"].met is False
    assert bars["PPO on the reward-KL frontier"].met is True
    assert bars["DPO (1 round) on the reward-KL frontier"].met is True      # KL 7.9 <= 8, 0.75 >= 0.72
    assert bars["GRPO on the reward-KL frontier"].met is False              # the interval reaches below 0
    assert bars["RLOO on the reward-KL frontier"].met is False              # KL 9 > 8
    assert bars["all notebooks (make run, without the install)"].met is False
    text = quality_bar_table(list(bars.values()))
    assert "**not met**" in text and "**met**" in text


def test_diversity_below_the_share_of_sft_fails_the_frontier_bar():
    heldout = pd.DataFrame({"positive_fraction": [0.4, 0.9], "kl": [0.0, 5.0], "distinct_2": [0.9, 0.70],
                            "gain_lo": [float("nan"), 45.0]}, index=pd.Index(["sft", "ppo"], name="model"))
    bar = next(b for b in quality_bars({}, heldout, None) if b.what.startswith("PPO"))
    assert bar.met is False and "distinct-2 0.70" in bar.value  # 0.70 < 0.8 x 0.9


def test_the_dpo_bar_reads_the_last_round():
    """Iterative DPO: the bar is the last round's policy, not round 1's (nor an earlier round's)."""
    rows = {"sft": (0.24, 0.0), "dpo": (0.61, 5.6), "dpo_round2": (0.79, 7.0), "dpo_round3": (0.83, 11.2)}
    heldout = pd.DataFrame({"positive_fraction": [v[0] for v in rows.values()], "kl": [v[1] for v in rows.values()]},
                           index=pd.Index(list(rows), name="model"))
    bar = next(b for b in quality_bars({}, heldout, None) if b.what.startswith("DPO"))
    assert bar.what == "DPO (3 rounds) on the reward-KL frontier" and "KL 11.2" in bar.value and bar.met is False
    bar = next(b for b in quality_bars({}, heldout.drop(index="dpo_round3"), None) if b.what.startswith("DPO"))
    assert "KL 7.0" in bar.value and bar.met is True


def test_quality_bars_without_anything_built():
    bars = quality_bars({}, None, None)
    assert all(b.met is None for b in bars)
    assert "not measured" in quality_bar_table(bars)


def test_report_command_reads_notebook_times(tmp_path):
    from rlhf_helpers.__main__ import main

    reports = tmp_path / "reports"
    reports.mkdir()
    _nb(reports / "01_sft.ipynb", [("train()", "2026-11-28T10:00:00Z", "2026-11-28T10:03:00Z")])
    out = tmp_path / "r.md"
    assert main(["report", "--preset", "smoke", "--no-eval", "--reports", str(reports), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| 01_sft | 3.0 min | 1 |" in text and "### Quality bars" in text


def test_kernel_peak_memory_column_from_timings(tmp_path):
    _nb(tmp_path / "01_sft.ipynb", [("a = 1", "2026-11-28T10:02:00Z", "2026-11-28T10:02:10Z")])
    (tmp_path / "timings.json").write_text(json.dumps({"jobs": 2, "wall_seconds": 10.0,
                                                       "peak_memory_mib": {"01_sft.ipynb": 2560}}))
    from rlhf_helpers.report import run_peaks

    table = notebook_time_table(notebook_times(tmp_path), 10.0, 2, run_peaks(tmp_path))
    assert "kernel's peak memory" in table and "| 01_sft | 10 s | 1 | `a = 1` 10 s | 2.5 GiB |" in table
    assert "peak memory" not in notebook_time_table(notebook_times(tmp_path))  # older runs: no column
