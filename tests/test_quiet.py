"""Known-harmless library noise is silenced package-side (issue 12), and nothing else is."""
import warnings


def test_trainer_defaults_turn_off_checkpointing_without_future_warning(tmp_path):
    from trl import SFTConfig

    from rlhf_helpers.config import SMOKE
    from rlhf_helpers.models import trainer_defaults

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = SFTConfig(output_dir=str(tmp_path), **trainer_defaults(SMOKE))
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]


def test_progress_callbacks_print_no_log_dicts(tmp_path, capsys):
    import transformers.trainer as hf_trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from rlhf_helpers.models import silence_known_noise

    silence_known_noise()
    bar_cls, printer_cls = hf_trainer.DEFAULT_PROGRESS_CALLBACK, hf_trainer.PrinterCallback
    assert issubclass(printer_cls, PrinterCallback)
    if issubclass(bar_cls, ProgressCallback):  # (in a notebook transformers uses its own HTML table instead)
        bar_cls().on_log(None, None, None, logs={"loss": 1.0})
    printer_cls().on_log(None, None, None, logs={"loss": 1.0})
    assert "loss" not in capsys.readouterr().out


def test_only_the_known_warnings_are_hidden():
    from rlhf_helpers.models import silence_known_noise

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        silence_known_noise()  # its filter goes in front of "always"
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something a learner should see", FutureWarning)
    messages = [str(w.message) for w in caught]
    assert messages == ["something a learner should see"], messages
