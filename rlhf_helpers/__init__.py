"""rlhf_helpers: the reusable pieces behind the rlhf-notebooks series.

One module per notebook (sft, reward, ppo, dpo, grpo, guardrail) plus shared config, data, models,
generation, evaluation, plots and widgets. Import explicitly, e.g. ``from rlhf_helpers.ppo import PPOTrainer``.
"""
__version__ = "0.1.0"


def _quiet_libraries() -> None:
    """Hide the per-file 'Loading weights' / 'Map' bars; training progress bars stay."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - optional niceties
        pass


_quiet_libraries()
