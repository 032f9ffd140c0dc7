"""The generation-length explorer of 03_ppo: the pure comparison function, its input checks and the widget."""
import math

import pytest

from rlhf_helpers.config import get_preset
from rlhf_helpers.widgets import (GenerationRequestError, check_generation_request, compare_generations,
                                  comparison_html, context_size, length_explorer, length_range, safe_max_length,
                                  side_by_side)


@pytest.fixture(scope="module")
def smoke_artifacts(tmp_path_factory):
    """The smoke SFT policy (loaded), its folder and the sentiment reward, built in a temporary RLHF_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_PRESET", "smoke")
        mp.setenv("RLHF_HOME", str(tmp_path_factory.mktemp("rlhf-home-widgets")))
        from rlhf_helpers.models import load_pretrained
        from rlhf_helpers.rater import sentiment_reward
        from rlhf_helpers.sft import ensure_sft

        preset = get_preset()
        folder = ensure_sft(preset)
        model, tok = load_pretrained(folder)
        yield {"preset": preset, "folder": folder, "model": model, "tok": tok, "reward": sentiment_reward(preset)}


def test_safe_max_length_leaves_room_for_the_prompt():
    assert safe_max_length(128) == 120
    assert safe_max_length(1024) == 128  # capped
    assert safe_max_length(5) == 1       # never below one token
    assert safe_max_length(None) == 128


def test_compare_generations_table(smoke_artifacts):
    a = smoke_artifacts
    pair = (a["model"], a["tok"])
    df = compare_generations({"SFT": pair, "PPO": a["folder"]}, a["reward"], "This movie was", 3, 5, seed=1,
                             n_samples=2)
    assert list(df.columns) == ["model", "sample", "length", "response", "reward", "positive"]
    assert len(df) == 4 and list(df["model"]) == ["SFT", "SFT", "PPO", "PPO"]
    assert df["length"].between(1, 5).all()
    assert all(math.isfinite(r) for r in df["reward"])
    # the same weights, seed and lengths give the same samples, whether passed as a folder or a pair
    sft, ppo = df[df.model == "SFT"].reset_index(drop=True), df[df.model == "PPO"].reset_index(drop=True)
    assert list(sft["response"]) == list(ppo["response"])
    again = compare_generations({"SFT": pair}, a["reward"], "This movie was", 3, 5, seed=1, n_samples=2)
    assert list(again["response"]) == list(sft["response"])
    wide = side_by_side(df)
    assert list(wide.columns) == ["SFT response", "SFT reward", "PPO response", "PPO reward"]
    assert wide["PPO reward"].dtype.kind == "f"


@pytest.mark.parametrize("prompt, lo, hi, words", [
    ("", 2, 4, "empty"),
    ("   \n\t", 2, 4, "empty"),
    ("This movie was", 5, 3, "larger than the maximum"),
    ("This movie was", 0, 3, "at least 1"),
    ("great " * 200, 2, 4, "Too long"),
])
def test_bad_requests_get_a_message(smoke_artifacts, prompt, lo, hi, words):
    a = smoke_artifacts
    models = {"SFT": (a["model"], a["tok"])}
    with pytest.raises(GenerationRequestError, match=words):
        compare_generations(models, a["reward"], prompt, lo, hi)
    html = comparison_html(models, a["reward"], prompt, lo, hi)  # the widget shows it instead of raising
    assert "Cannot sample" in html and words.split()[0] in html


def test_length_limit_counts_prompt_and_response(smoke_artifacts):
    a = smoke_artifacts
    context = context_size(a["model"])
    n = len(a["tok"]("This movie was")["input_ids"])
    assert check_generation_request(a["tok"], "This movie was", 1, context - n, context) is None
    assert "Too long" in check_generation_request(a["tok"], "This movie was", 1, context - n + 1, context)


def test_length_range_fits_the_preset():
    smoke, tiny = get_preset("smoke"), get_preset("tiny")
    assert length_range(smoke, 128) == (1, max(smoke.sft.max_length, 2 * smoke.ppo.max_len))
    assert length_range(tiny, 256)[1] == max(tiny.sft.max_length, 2 * tiny.ppo.max_len)
    assert length_range(tiny, 20) == (1, 12)          # a short context wins, with room for the prompt
    for preset in (smoke, tiny):
        assert length_range(preset, 1024)[1] >= preset.ppo.max_len


def test_length_explorer_widget(smoke_artifacts):
    import ipywidgets as w

    a = smoke_artifacts
    pair = (a["model"], a["tok"])
    box = length_explorer(pair, pair, a["reward"], a["preset"])
    prompt_box, lengths, (seed, count, button), result = (box.children[0], box.children[1],
                                                          box.children[2].children, box.children[3])
    assert isinstance(lengths, w.IntRangeSlider)              # one slider: the minimum cannot pass the maximum
    assert lengths.style.description_width == "initial" and lengths.layout.width
    assert prompt_box.value.strip()                           # a held-out prompt by default
    assert (lengths.min, lengths.max) == length_range(a["preset"], context_size(a["model"]))
    assert lengths.value == (a["preset"].ppo.min_len, a["preset"].ppo.max_len)
    count.value = 1
    button.click()
    assert "SFT response" in result.value and "PPO reward" in result.value
    assert "></th>" not in result.value                       # one header row, no empty corner cell
    first = result.value
    lengths.value = (lengths.max - 1, lengths.max)
    button.click()
    assert result.value != first and f"lengths {lengths.max - 1}-{lengths.max}" in result.value
    with pytest.raises(Exception, match="lower > upper"):     # min > max cannot even be set
        lengths.value = (5, 3)
    prompt_box.value = "   "
    button.click()
    assert "empty" in result.value


def test_step_axes_have_whole_number_ticks():
    import matplotlib

    matplotlib.use("Agg")
    from rlhf_helpers.plots import plot_curves

    axes = plot_curves([{"step": 1, "kl": 0.1}, {"step": 2, "kl": 0.2}], ("kl",))
    ticks = axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks)
