"""The diagram of notebook 00 (issue #22): one figure names the three models that score text, the rater, the reward
model and the auditor, with "learns from" and "grades" arrows, and nothing else is called a judge there."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from rlhf_helpers.plots import plot_model_roles  # noqa: E402


def test_model_roles_figure_names_the_three_roles_and_both_arrows():
    fig = plot_model_roles()
    try:
        assert isinstance(fig, Figure)
        words = " ".join(t.get_text() for t in fig.findobj(Text)).lower()
        for role in ("the rater", "the reward model", "the auditor"):
            assert role in words, f"the diagram does not name {role!r}"
        for arrow in ("learns from", "grades"):
            assert arrow in words, f"the diagram has no {arrow!r} arrow or legend entry"
        assert "ppo, grpo, rloo" in words and "test set" in words and "best-of-n" in words
        for old in ("judge", "oracle", "proxy", "truth"):
            assert old not in words, f"the diagram still says {old!r}"
    finally:
        plt.close(fig)


def test_model_roles_draws_into_a_given_axes():
    fig, ax = plt.subplots()
    try:
        assert plot_model_roles(ax=ax) is fig
    finally:
        plt.close(fig)
