"""ipywidgets controls used by the notebooks (generation-length sliders, live side-by-side comparisons).

Each control is a thin shell around a pure function that the tests call directly, so every notebook
also runs headless: the notebook displays the widget and calls the function once for the static page.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping

from .models import load_policy


# --------------------------------------------------------------------------------------------
# 03_ppo: the generation-length explorer (SFT before vs PPO after, side by side)
# --------------------------------------------------------------------------------------------
class GenerationRequestError(ValueError):
    """A sampling request that cannot run (empty prompt, min > max, too long for the context)."""


def context_size(model) -> int | None:
    """How many tokens (prompt + response) the model can see: ``n_positions`` or ``max_position_embeddings``."""
    cfg = model.config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def safe_max_length(context: int | None, prompt_room: int = 8, cap: int = 128) -> int:
    """Largest response length a slider should offer: room for a short prompt, and at most ``cap``."""
    if context is None:
        return cap
    return max(1, min(context - prompt_room, cap))


def length_range(preset, context: int | None, prompt_room: int = 8) -> tuple[int, int]:
    """The ``(min, max)`` a response-length slider should span for this preset and model.

    The top is what the writer was trained for: the larger of the SFT training length and twice the
    PPO maximum length, and never more than the model's context minus room for a short prompt (and at
    most 128). So the smoke preset's model (trained on 32 tokens, PPO lengths 4-6) gets 1-32, not 1-120,
    and a handle moves by one token for a few pixels of mouse travel.
    """
    wanted = max(preset.sft.max_length, 2 * preset.ppo.max_len, preset.ppo.min_len + 1)
    return 1, max(1, min(safe_max_length(context, prompt_room), wanted))


def check_generation_request(tokenizer, prompt: str, min_len: int, max_len: int,
                             context: int | None = None) -> str | None:
    """Why this prompt/length request cannot be sampled, in words; ``None`` when it can."""
    if not isinstance(prompt, str) or not prompt.strip():
        return "The prompt is empty: type the beginning of a review, e.g. 'This movie was'."
    if min_len < 1:
        return f"The minimum length must be at least 1 token (got {min_len})."
    if min_len > max_len:
        return (f"The minimum length ({min_len}) is larger than the maximum length ({max_len}): "
                "lower the minimum or raise the maximum.")
    n_prompt = len(tokenizer(prompt)["input_ids"])
    if n_prompt == 0:
        return "The prompt has no tokens after tokenisation: type some words."
    if context is not None and n_prompt + max_len > context:
        return (f"Too long for the model: the prompt is {n_prompt} tokens and up to {max_len} new tokens makes "
                f"{n_prompt + max_len}, but the model sees at most {context}. Shorten the prompt or lower the "
                "maximum length.")
    return None


def compare_generations(models: Mapping[str, object], reward, prompt: str, min_len: int, max_len: int,
                        seed: int = 0, n_samples: int = 1) -> "pandas.DataFrame":
    """Sample ``n_samples`` responses to one prompt from each model (same seed, same lengths) and score them.

    ``models`` maps a name to a folder or a ``(model, tokenizer)`` pair. Returns a tidy DataFrame with
    one row per (model, sample): ``model, sample, length, response, reward, positive``. Raises
    ``GenerationRequestError`` with a readable message when the request cannot run.
    """
    import pandas as pd
    import torch

    from .data import LengthSampler
    from .generation import generate_responses

    if not models:
        raise GenerationRequestError("Give at least one model to sample from.")
    if n_samples < 1:
        raise GenerationRequestError(f"Ask for at least one sample (got {n_samples}).")
    rows = []
    for name, m in models.items():
        model, tok = load_policy(m)
        problem = check_generation_request(tok, prompt, min_len, max_len, context_size(model))
        if problem:
            raise GenerationRequestError(problem)
        query = torch.tensor(tok(prompt)["input_ids"], dtype=torch.long)
        sampler = LengthSampler(min_len, max_len, seed=seed)
        lengths = [sampler() for _ in range(n_samples)]
        torch.manual_seed(seed)
        responses = generate_responses(model, tok, [query] * n_samples, lengths)
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        from .rater import log_odds

        logits = reward.all_logits([prompt + t for t in texts])
        for i, (text, resp, lg) in enumerate(zip(texts, responses, logits)):
            rows.append({"model": name, "sample": i + 1, "length": len(resp), "response": text,
                         "reward": log_odds(lg, reward.label), "positive": max(lg, key=lg.get) == reward.label})
    return pd.DataFrame(rows, columns=["model", "sample", "length", "response", "reward", "positive"])


def side_by_side(table: "pandas.DataFrame") -> "pandas.DataFrame":
    """The tidy table of ``compare_generations`` with the models next to each other, one row per sample."""
    import pandas as pd

    parts = {}
    for name, group in table.groupby("model", sort=False):
        group = group.set_index("sample")
        parts[f"{name} response"] = group["response"]
        parts[f"{name} reward"] = group["reward"].astype(float)
    wide = pd.DataFrame(parts)
    # one header row: "sample" sits in the corner above the sample numbers, not on a row of its own
    wide.index.name, wide.columns.name = None, "sample"
    return wide


def comparison_html(models: Mapping[str, object], reward, prompt: str, min_len: int, max_len: int,
                    seed: int = 0, n_samples: int = 1) -> str:
    """What the explorer shows after a click: the side-by-side table, or the reason it cannot run."""
    try:
        table = compare_generations(models, reward, prompt, min_len, max_len, seed=seed, n_samples=n_samples)
    except (GenerationRequestError, ValueError) as err:
        return f'<p style="color:#b00020"><b>Cannot sample:</b> {html.escape(str(err))}</p>'
    means = table.groupby("model", sort=False)["reward"].mean()
    summary = ", ".join(f"{html.escape(str(m))}: {v:+.2f}" for m, v in means.items())
    body = table_html(side_by_side(table), float_format=lambda v: f"{v:+.2f}")
    return (f"<p><b>Prompt:</b> {html.escape(prompt)}<br><b>Mean reward</b> ({len(table) // len(means)} "
            f"samples, lengths {min_len}-{max_len}, seed {seed}): {summary}</p>{body}")


_CELL = "padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top"


def table_html(table: "pandas.DataFrame", **to_html) -> str:
    """A DataFrame as a light HTML table for an ``HTML`` widget (inline styles: a widget's HTML is not
    styled by JupyterLab's notebook CSS, and pandas' ``border=1`` draws heavy double lines)."""
    body = table.to_html(escape=True, border=0, **to_html)
    body = body.replace('<table class="dataframe">', '<table class="dataframe" style="border-collapse:collapse;'
                                                     'margin-top:4px">')
    body = body.replace('<tr style="text-align: right;">', "<tr>")
    return body.replace("<th>", f'<th style="{_CELL};font-weight:600">').replace("<td>", f'<td style="{_CELL}">')


def length_explorer(before, after, reward, preset, prompt: str | None = None,
                    labels: tuple[str, str] = ("SFT", "PPO"), n_samples: int = 3) -> "ipywidgets.VBox":
    """A length-range slider, a prompt box, a seed and a button that samples both models.

    ``before``/``after`` are folders or ``(model, tokenizer)`` pairs (loaded once, here). The response
    length is one ``IntRangeSlider`` (so the minimum can never pass the maximum) spanning
    ``length_range(preset, context)``. Returns an ``ipywidgets.VBox``
    ``[prompt box, length slider, HBox([seed, samples, button]), result]``; its last child is the
    ``HTML`` widget that holds the result.
    """
    import ipywidgets as w

    models = {labels[0]: load_policy(before), labels[1]: load_policy(after)}
    contexts = [c for c in (context_size(m) for m, _ in models.values()) if c]
    low, top = length_range(preset, min(contexts) if contexts else None)
    if prompt is None:
        from .evaluate import heldout_prompts

        prompt = heldout_prompts(preset, models[labels[0]][1], n=1)[0]
    lo, hi = min(preset.ppo.min_len, top), min(preset.ppo.max_len, top)
    style = {"description_width": "initial"}
    wide = w.Layout(width="95%", max_width="760px")
    prompt_box = w.Text(value=prompt, description="prompt", style=style, layout=wide)
    lengths = w.IntRangeSlider(value=(lo, hi), min=low, max=top, step=1, description="response length (tokens)",
                               continuous_update=False, style=style, layout=wide)
    seed_box = w.BoundedIntText(value=preset.seed, min=0, max=2**31 - 1, description="seed", style=style,
                                layout=w.Layout(width="160px"))
    count = w.IntSlider(value=n_samples, min=1, max=8, description="samples per model", style=style,
                        layout=w.Layout(width="320px"))
    button = w.Button(description=f"Sample {labels[0]} and {labels[1]}", button_style="primary",
                      layout=w.Layout(width="auto"))
    result = w.HTML(value="<i>Pick a length range and a prompt, then press the button.</i>")

    def on_click(_=None) -> None:
        result.value = "<i>sampling ...</i>"
        min_len, max_len = lengths.value
        result.value = comparison_html(models, reward, prompt_box.value, min_len, max_len,
                                       seed=seed_box.value, n_samples=count.value)

    button.on_click(on_click)
    return w.VBox([prompt_box, lengths, w.HBox([seed_box, count, button]), result])


# --------------------------------------------------------------------------------------------
# 06_guardrail: every method's answer to one prompt, side by side
# --------------------------------------------------------------------------------------------
def answers_explorer(prompts, answer_fn, description: str = "Answer with every method"):
    """A prompt picker (a dropdown of prompts, editable in a text box) and a button that shows
    ``answer_fn(prompt)``, a DataFrame such as ``rlhf_helpers.guardrail.compare_answers`` returns.

    Returns an ``ipywidgets.VBox``; its last child is the ``HTML`` widget that holds the table.
    """
    import html as _html

    import ipywidgets as w

    prompts = list(prompts)
    if not prompts:
        raise ValueError("give at least one prompt to pick from")
    style, wide = {"description_width": "initial"}, w.Layout(width="95%", max_width="760px")
    picker = w.Dropdown(options=prompts, value=prompts[0], description="prompt", style=style, layout=wide)
    box = w.Text(value=prompts[0], description="edit", style=style, layout=wide)
    button = w.Button(description=description, button_style="primary",
                      layout=w.Layout(width="auto", align_self="flex-start"))  # not stretched across the page
    result = w.HTML(value="<i>Pick or type a prompt, then press the button.</i>")
    picker.observe(lambda change: setattr(box, "value", change["new"]), names="value")

    def on_click(_=None) -> None:
        result.value = "<i>sampling ...</i>"
        try:
            table = answer_fn(box.value)
        except (ValueError, TypeError) as err:
            result.value = f'<p style="color:#b00020"><b>Cannot answer:</b> {_html.escape(str(err))}</p>'
            return
        result.value = f"<p><b>Prompt:</b> {_html.escape(box.value)}</p>" + table_html(table, index=False)

    button.on_click(on_click)
    return w.VBox([picker, box, button, result])
