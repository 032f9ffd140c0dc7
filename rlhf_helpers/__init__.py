"""rlhf_helpers: the reusable pieces behind the rlhf-notebooks series.

One module per notebook (sft, reward, ppo, dpo, grpo, guardrail) plus shared config, data, models,
evaluation, plots and widgets. Import explicitly, e.g. ``from rlhf_helpers.ppo import PPOTrainer``.
"""
__version__ = "0.1.0"
