"""rlhf_helpers: the reusable pieces behind the rlhf-notebooks series.

One module per notebook (sft, ppo, dpo, grpo, guardrail) and, for notebook 02, one per model role: rater (the
IMDB classifier), pairs (its comparisons), reward_model (learned from them) and auditor (the Rotten-Tomatoes
bag of words that only grades); plus shared config, data, models, generation, evaluation, plots and widgets. Import
explicitly, e.g. ``from rlhf_helpers.ppo import PPOTrainer``.

Importing the package itself loads nothing heavy (no torch, datasets or transformers), so the command line's
``--help``, ``presets`` and an unknown preset answer at once; the modules that load data or models call
:func:`quiet_libraries` themselves. Importing it does one thing to the process: on Linux with glibc, freed
memory stays in the process for the next training step to reuse (allocator.py; measured in docs/tuning.md).
"""
__version__ = "0.1.0"

_QUIETED = False


def quiet_libraries() -> None:
    """Hide the per-file 'Loading weights' / 'Map' bars and the library chatter a learner need not read;
    training progress bars stay. Idempotent; called where data or models load, not at import."""
    global _QUIETED
    if _QUIETED:
        return
    _QUIETED = True
    try:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - optional niceties
        pass
    from .models import silence_known_noise

    silence_known_noise()


def _register_notebook_magics() -> None:
    """Inside IPython (a notebook kernel), register ``%%solution`` and ``%solutions`` (see solutions.py);
    elsewhere do nothing and import nothing."""
    import sys

    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is not None and hasattr(shell, "register_magic_function"):
        from .solutions import register

        register(shell)


_register_notebook_magics()

from .allocator import keep_freed_memory  # noqa: E402  (light: os, sys and ctypes only)

keep_freed_memory()
