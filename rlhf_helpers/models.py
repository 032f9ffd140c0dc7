"""Loading and saving models, and the artifacts registry.

Every stage saves to ``<RLHF_HOME>/<preset>/<stage>/model``: written to a temporary folder first and
renamed only when complete, so a killed save never leaves a folder that looks finished. Training
checkpoints go to ``<RLHF_HOME>/<preset>/<stage>/checkpoints`` and are removed once the model is saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from .config import BUILD_STAGES, Preset, artifacts_home

META = "rlhf_meta.json"


class ArtifactError(RuntimeError):
    pass


def stage_dir(preset: Preset, stage: str) -> Path:
    return artifacts_home() / preset.name / stage


def model_dir(preset: Preset, stage: str) -> Path:
    return stage_dir(preset, stage) / "model"


def checkpoint_dir(preset: Preset, stage: str) -> Path:
    return stage_dir(preset, stage) / "checkpoints"


def clean_partial(preset: Preset, stage: str) -> None:
    """Delete half-written model folders left by a killed save (never loaded)."""
    root = stage_dir(preset, stage)
    if not root.exists():
        return
    for tmp in root.glob("model.tmp-*"):
        print(f"[artifacts] removing an unfinished save: {tmp}")
        shutil.rmtree(tmp, ignore_errors=True)
    final = root / "model"
    if final.exists() and not (final / META).exists():
        print(f"[artifacts] {final} has no {META} (an interrupted or foreign save); removing it.")
        shutil.rmtree(final, ignore_errors=True)


def is_complete(preset: Preset, stage: str) -> bool:
    return (model_dir(preset, stage) / META).exists()


def read_meta(preset_or_path: Preset | Path | str, stage: str | None = None) -> dict[str, Any]:
    """The settings and metrics JSON saved beside a model."""
    folder = model_dir(preset_or_path, stage) if isinstance(preset_or_path, Preset) else Path(preset_or_path)
    path = folder / META
    if not path.exists():
        raise ArtifactError(f"{folder} is not a finished artifact (no {META}).")
    return json.loads(path.read_text())


def save_artifact(preset: Preset, stage: str, save_fn: Callable[[Path], None], meta: dict[str, Any]) -> Path:
    """Save atomically: ``save_fn(tmp)`` writes the files, then the metadata, then one rename."""
    root = stage_dir(preset, stage)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"model.tmp-{os.getpid()}-{int(time.time() * 1000)}"
    save_fn(tmp)
    meta = {"preset": preset.name, "stage": stage, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"), **meta}
    (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    final = root / "model"
    if final.exists():
        old = root / f"model.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    shutil.rmtree(checkpoint_dir(preset, stage), ignore_errors=True)
    return final


def silence_known_noise() -> None:
    """Hide the library output a learner would otherwise have to learn to ignore, and nothing else.

    - transformers' FutureWarnings about the deprecated ``gradient_checkpointing*`` names (TRL still uses them);
    - the per-step log dicts (``{'loss': '6.17', 'grad_norm': ...}``) that the trainers' console progress
      callback prints under the bar: the numbers stay in ``trainer.state.log_history`` (the notebooks plot them).
      Set ``RLHF_TRAIN_LOGS=1`` to print them again.
    Every other warning still shows.
    """
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r".*gradient_checkpointing(_kwargs|_enable|_disable)?` is deprecated")
    if os.environ.get("RLHF_TRAIN_LOGS") == "1":
        return
    import transformers.trainer as hf_trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class QuietProgressCallback(ProgressCallback):
        """The progress bar without the log dict written under it at every logging step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    class QuietPrinterCallback(PrinterCallback):
        """What ``disable_tqdm=True`` gets: no per-step dicts either (they stay in the log history)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    if hf_trainer.DEFAULT_PROGRESS_CALLBACK is ProgressCallback:
        hf_trainer.DEFAULT_PROGRESS_CALLBACK = QuietProgressCallback
    if hf_trainer.PrinterCallback is PrinterCallback:
        hf_trainer.PrinterCallback = QuietPrinterCallback


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles).

    There, bf16 autocast makes the stages that train on fixed data (SFT, classifier, reward model, DPO) about
    1.5-2x faster (measured: one SFT step 0.26 s -> 0.155 s on 2 cores); on other CPUs bf16 is emulated and
    slower than fp32, so they stay in fp32. ``RLHF_CPU_BF16=0`` (or ``1``) overrides the check."""
    choice = os.environ.get("RLHF_CPU_BF16", "").strip()
    if choice in ("0", "1"):
        return choice == "1"
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_label(mixed_precision: bool = False) -> str:
    """What :func:`trainer_defaults` chooses on this machine, in words (the training cells print it)."""
    from .config import device_name

    device = device_name()
    if not mixed_precision:
        return f"fp32 on the {device} (sampled and scored at one precision)"
    if device == "cuda":
        return "bf16 autocast on the GPU"
    if device == "mps":
        return "fp32 on the Apple GPU (mps)"
    if cpu_bf16():
        return "bf16 autocast (this CPU multiplies bf16 natively; weights stay fp32)"
    return "fp32 (this CPU has no native bf16, where bf16 would be slower; RLHF_CPU_BF16=1 forces it)"


def trainer_defaults(preset: Preset, mixed_precision: bool = False) -> dict[str, Any]:
    """Settings every transformers/TRL trainer here shares: seeded, no loggers, one checkpoint kept,
    no gradient checkpointing, the device that ``RLHF_DEVICE`` chooses (:func:`config.device_name`), and the
    known-harmless library noise silenced (:func:`silence_known_noise`).

    Precision: the stages that train on fixed data (SFT, classifier, reward model, DPO) ask for
    ``mixed_precision``: bf16 autocast on a CUDA GPU, and on a CPU with native bf16 (:func:`cpu_bf16`); the
    weights stay fp32 either way. The on-policy RL stages (PPO, GRPO, RLOO) run in fp32 on every device, so
    the tokens are sampled and their log-probabilities scored at one precision."""
    from . import quiet_libraries
    from .config import device_name

    quiet_libraries()  # also silence_known_noise()
    device = device_name()
    return {"save_total_limit": 1, "report_to": "none", "seed": preset.seed, "data_seed": preset.seed,
            "use_cpu": device == "cpu",
            "bf16": mixed_precision and (device == "cuda" or (device == "cpu" and cpu_bf16())),
            "dataloader_num_workers": 0,
            # TRL turns gradient (activation) checkpointing on by default, via the deprecated name, which also
            # printed a FutureWarning per trainer: it recomputes every activation in the backward pass (about a
            # third more compute) to save memory these small models never run short of
            "activation_checkpointing": False}


def save_model_artifact(preset: Preset, stage: str, model, tokenizer, meta: dict[str, Any]) -> Path:
    """Save a trained transformers model and its tokenizer (safetensors) as the ``stage`` artifact."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return save_artifact(preset, stage, write, meta)


LOCK = ".building.lock"


@contextmanager
def stage_lock(preset: Preset, stage: str):
    """Hold ``stage``'s lock while it is checked and built, so that two processes (two notebooks open at once,
    a notebook beside ``build``, or ``make run`` running two notebooks at a time) never build the same stage
    twice or delete each other's half-written save: the second waits, then finds the stage finished.

    An exclusive ``flock`` on ``<stage>/.building.lock``; the operating system releases it when the holder
    exits, however it exits, so a killed build never leaves a stale lock. Stages lock in the order they
    depend on each other (a stage's build only ensures the stages it is built from), so no two processes can
    wait for each other. Where ``fcntl`` does not exist (Windows), or the lock file cannot be written (a read-only
    artifacts folder, which can only be loaded from), there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    root = stage_dir(preset, stage)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK, "a")
    except OSError:  # a read-only artifacts folder (a shared kit): loading needs no lock, and a build fails anyway
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[artifacts] '{stage}' is being built by another process (another notebook or `build`); "
                  "waiting for it to finish ...", flush=True)
            t0 = time.perf_counter()
            fcntl.flock(handle, fcntl.LOCK_EX)
            print(f"[artifacts] '{stage}' is free again after {time.perf_counter() - t0:.0f} s", flush=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(preset: Preset, stage: str, build: Callable[[], Path], force: bool = False,
           requires: str | None = None) -> Path:
    """Return the finished artifact folder of ``stage``, building it first if missing (or ``force``).
    Checked and built under :func:`stage_lock`: one process builds, any other waits and then loads."""
    with stage_lock(preset, stage):
        return _ensure_locked(preset, stage, build, force)


def _ensure_locked(preset: Preset, stage: str, build: Callable[[], Path], force: bool) -> Path:
    clean_partial(preset, stage)
    if is_complete(preset, stage) and not force:
        meta = read_meta(preset, stage)
        if meta.get("preset") != preset.name:
            raise ArtifactError(
                f"{model_dir(preset, stage)} was built for preset {meta.get('preset')!r}, not {preset.name!r}. "
                f"Delete that folder (rm -r {stage_dir(preset, stage)}) to rebuild it."
            )
        _check_same_tokenizer(preset, stage, meta)
        drift = settings_drift(preset, stage, meta)
        if drift:
            rebuild = (f"python -m rlhf_helpers build {stage} --preset {preset.name} --force" if stage in BUILD_STAGES
                       else f"delete {stage_dir(preset, stage)} and run again")
            print(f"[artifacts] note: '{stage}' in {model_dir(preset, stage)} was built with other settings than preset "
                  f"{preset.name!r} has now ({'; '.join(drift)}). It is used as it is, so its numbers may differ "
                  f"from the reference-run callouts. To rebuild it with the current settings: {rebuild}.")
        return model_dir(preset, stage)
    why = "forced rebuild" if force else "not found"
    print(f"[artifacts] building '{stage}' for preset '{preset.name}' ({why}); it will be saved to "
          f"{model_dir(preset, stage)}")
    return build()


_NOT_LEARNED = {"save_steps", "save_every", "attention"}  # how often a stage checkpoints, or which attention code
# computes the same attention, changes nothing it learns


def expected_settings(preset: Preset, stage: str) -> dict[str, Any] | None:
    """The settings ``stage`` records in its metadata when built now from ``preset`` (None: not tracked)."""
    from dataclasses import asdict

    if stage in ("sft", "classifier", "pairs", "reward_model"):
        return asdict(getattr(preset, stage))
    if stage == "reward_model_cheap":  # notebook 06's cheap proxy: the reward model's settings with the overopt start
        o = preset.overopt
        return {**asdict(preset.reward_model), "init": o.cheap_init, "train_pairs": o.cheap_pairs}
    if stage == "ppo":  # what the preset sets; PPOConfig's other fields are the code's defaults
        from .config import ppo_config_kwargs

        return ppo_config_kwargs(preset)
    if stage.startswith("dpo_pairs"):  # the pairs depend on how they are sampled and filtered, not on DPO's training
        return {k: getattr(preset.dpo, k) for k in ("n_prompts", "samples_per_prompt", "margin")}
    if stage == "dpo" or stage.startswith("dpo_beta"):  # round 1; the sweep's stages record their own beta
        return {k: v for k, v in asdict(preset.dpo).items() if k not in ("beta", "rounds", "sft_weight", "later_learning_rate")}
    if stage.startswith("dpo_round"):  # a later round does not depend on how many rounds follow it
        return {k: v for k, v in asdict(preset.dpo).items() if k != "rounds"}
    if stage in ("grpo", "rloo"):
        return asdict(preset.grpo)
    return None


def settings_drift(preset: Preset, stage: str, meta: dict[str, Any]) -> list[str]:
    """``"name stored -> current"`` for every setting that the artifact was built with and the preset has changed
    since (e.g. after pulling new defaults); empty when they agree or the stage records none."""
    expected = expected_settings(preset, stage)
    stored = meta.get("settings") or {}
    if expected is None:
        return []
    expected = json.loads(json.dumps(expected))  # as stored: tuples become lists
    return [f"{k} {stored[k]!r} -> {v!r}" for k, v in sorted(expected.items())
            if k in stored and k not in _NOT_LEARNED and stored[k] != v]


def _check_same_tokenizer(preset: Preset, stage: str, meta: dict[str, Any]) -> None:
    """Refuse an artifact trained with another tokenizer than the preset's current one (tiny/smoke)."""
    tok_meta = model_dir(preset, "tokenizer") / META
    if stage == "tokenizer" or not meta.get("tokenizer") or not tok_meta.exists():
        return
    current = json.loads(tok_meta.read_text()).get("tokenizer")
    if current and current != meta["tokenizer"]:
        raise ArtifactError(
            f"{model_dir(preset, stage)} was trained with a different tokenizer (fingerprint {meta['tokenizer']}, "
            f"current {current}). Delete it (rm -r {stage_dir(preset, stage)}) so it is rebuilt with the current one."
        )


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary, stored with every artifact to catch mismatched tokenizers."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def _wrap_load_error(what: str, path: str | Path, err: Exception) -> ArtifactError:
    p = Path(str(path))
    if p.exists():
        return ArtifactError(
            f"Could not load the {what} in {p} ({type(err).__name__}: {err}). The folder looks corrupt or "
            f"incomplete: delete it (rm -r {p.parent if p.name == 'model' else p}) and run the notebook or "
            f"command again to rebuild it."
        )
    return ArtifactError(
        f"Could not load the {what} {str(path)!r} ({type(err).__name__}: {err}). If this is a hub name, you are "
        "probably offline (HF_HUB_OFFLINE=1 or no network): use RLHF_PRESET=tiny, which needs no network, or "
        "point RLHF_POLICY_MODEL / RLHF_SENTIMENT_MODEL at local folders holding the models."
    )


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    from . import quiet_libraries

    quiet_libraries()

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:
        raise _wrap_load_error("tokenizer", path, err) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | Path, **kwargs):
    """A causal LM from a folder or hub name: safetensors only, never remote code."""
    from transformers import AutoModelForCausalLM

    from . import quiet_libraries

    quiet_libraries()

    try:
        return AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False,
                                                    **kwargs)
    except Exception as err:
        raise _wrap_load_error("language model", path, err) from err


class NotAClassifierError(ArtifactError):
    pass


def load_classifier(path: str | Path, **kwargs):
    """A sequence classifier whose *every* weight, head included, is in the checkpoint.

    ``AutoModelForSequenceClassification`` happily loads a plain language model (or a classifier saved
    without its head) and starts the missing head at random: every score would then be noise, and RL
    would optimise noise. Such a folder is refused, naming the missing weights.
    """
    from transformers import AutoModelForSequenceClassification

    from . import quiet_libraries

    quiet_libraries()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=False, output_loading_info=True, **kwargs)
    except Exception as err:
        raise _wrap_load_error("classifier", path, err) from err
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:4]) + (" ..." if len(missing) > 4 else "")
        raise NotAClassifierError(
            f"{path} is not a trained classifier: the weights {shown} are not in its checkpoint, so they would "
            "start at random and every score would be noise. A sentiment classifier folder must hold a "
            "*ForSequenceClassification model saved with its trained head (config.json with architectures "
            "'...ForSequenceClassification' and id2label naming a POSITIVE class, model.safetensors, the "
            "tokenizer files), e.g. the `classifier` artifact that `python -m rlhf_helpers build classifier` makes, "
            "or a copy of lvwerra/distilbert-imdb.")
    return model


def load_pretrained(path: str | Path):
    """``(model, tokenizer)`` from one folder, model in eval mode."""
    tok = load_tokenizer(path)
    model = load_causal_lm(path)
    model.eval()
    return model, tok


def load_policy(m, device=None):
    """``(model, tokenizer)`` from a model folder (or a pair, returned as is), moved to ``device`` when given."""
    model, tok = load_pretrained(m) if isinstance(m, (str, Path)) else m
    if device is not None:
        model.to(device)
    return model, tok


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder written by a transformers/TRL trainer, if any. A trainer writes
    ``trainer_state.json`` last, so a folder without it was being written when the run was killed: it is skipped and
    the one before it is used (``transformers.trainer_utils.get_last_checkpoint`` would return the broken one)."""
    if not Path(folder).is_dir():
        return None
    found = [(int(c.name.split("-")[1]), c) for c in Path(folder).glob("checkpoint-*")
             if c.is_dir() and c.name.split("-")[1].isdigit()]
    for _, ckpt in sorted(found, reverse=True):
        if (ckpt / "trainer_state.json").exists():
            return str(ckpt)
    return None


def trainer_log(trainer) -> list[dict]:
    """The trainer's log history (loss curves), kept with the artifact for the notebooks' plots."""
    return [dict(entry) for entry in trainer.state.log_history]
