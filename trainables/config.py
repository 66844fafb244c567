"""Validated configuration of one trial: model, data, teacher, training, λ policy and evaluation.

Every knob has a default and a range; unknown keys are errors. The sweep file (`tuner.spec`)
composes these sections, and each Tune trial receives them as a plain dict it re-validates.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.tasks.schema import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SHOTS,
    LANGS,
    TASKS,
)

Condition = Literal["base", "fewshot", "sft", "distill", "control"]
CONDITIONS: tuple[str, ...] = ("base", "fewshot", "sft", "distill", "control")
#: Conditions that train a student (the others only evaluate the untrained model).
TRAINING_CONDITIONS: tuple[str, ...] = ("sft", "distill", "control")

TeacherMode = Literal["fewshot", "zeroshot", "checkpoint"]
KdLoss = Literal["forward_kl", "topk_kl", "reverse_kl", "jsd", "mse_logits"]

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every config section: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class TinyModelConfig(Section):
    """The embedded default model: the shipped pre-trained small Llama, or a random init of a shape."""

    pretrained: bool = Field(
        True, description="the shipped weights pre-trained to learn in context (trainables/tiny_model, "
        "made by `python -m trainables.pretrain`); false: a seeded random init of the shape below")
    vocab_size: int = Field(2048, ge=300, le=65536)
    hidden_size: int = Field(128, ge=16, le=128)
    num_layers: int = Field(4, ge=1, le=8)
    num_heads: int = Field(4, ge=1, le=16)
    intermediate_size: int = Field(256, ge=16, le=1024)
    max_positions: int = Field(2048, ge=128, le=8192)
    init_seed: int = Field(0, ge=0, description="seed of the random init (pretrained: false)")


class RandomModelConfig(Section):
    """A random-weight model of a published shape (model.name=random:<architecture>), built without a download."""

    tokenizer: str = Field(
        "bpe", min_length=1, description="'bpe': a byte-level BPE of the architecture's vocabulary size learnt "
        "from `corpus`; else a tokenizer's local folder or hub id (e.g. the real model's, a few MB)")
    corpus: str | None = Field(
        None, description="'synthetic', 'hub' or 'local:<dir>': the text the 'bpe' tokenizer learns from; "
        "default: the sweep's data.source")
    corpus_per_pair: int = Field(2000, ge=10, le=1_000_000,
                                 description="records read per task, language and split for the tokenizer")
    init_seed: int = Field(0, ge=0, description="seed of the weights (initialised on the CPU: the same on every node)")

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, v: str | None) -> str | None:
        return None if v is None else DataConfig._source(v)


class ModelConfig(Section):
    """Which causal LM to distil into, and how the student is fine-tuned."""

    name: str = Field("tiny", min_length=1, description="'tiny', 'random:<architecture>' (e.g. "
                      "random:llama-3.2-3b), a Hugging Face model id, or a local path")
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32.0, gt=0, le=4096)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    fused_norm: bool = Field(True, description="RMSNorm layers run torch's rms_norm (one fused kernel on a GPU, "
                             "forward and backward) instead of transformers' seven; the same values up to rounding")
    lean_lora: bool = Field(True, description="LoRA adds s·B·A·x into the base projection's output with one GEMM "
                            "(trainables/lora_forward.py) instead of PEFT's separate multiply and add over the "
                            "whole output; the same values up to rounding")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    random: RandomModelConfig = Field(default_factory=RandomModelConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from trainables.random_shapes import architecture, is_random

        if is_random(v):
            architecture(v)  # one line naming the architectures when unknown
        return v


class DataConfig(Section):
    """Where examples come from, how many, and how prompts are bounded."""

    source: str = Field("synthetic", description="'synthetic', 'hub', or 'local:<dir>'")
    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    train_lang: str = "en"
    train_split: Literal["train", "dev"] = Field(
        "train",
        description="split of train_lang the training pool comes from; 'dev' for data without a training set "
        "(e.g. the XTREME sample): its dev scores in train_lang are then in-sample",
    )
    eval_langs: list[str] = Field(default_factory=lambda: list(LANGS))
    max_train_per_task: int = Field(5000, ge=1, le=1_000_000)
    synthetic_sizes: dict[str, int] = Field(
        default_factory=lambda: {"train": 2000, "dev": 200, "test": 200},
        description="records generated per task, language and split by the synthetic source",
    )
    shots: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_SHOTS))
    max_student_len: int = Field(512, ge=16, le=32768)
    max_teacher_len: int = Field(2048, ge=16, le=131072)
    seed: int = Field(42, ge=0)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v in ("synthetic", "hub"):
            return v
        if v.startswith("local:") and v[len("local:"):].strip():
            # Absolute, so that trials (whose working directory is their own) find the same folder.
            return "local:" + os.path.abspath(os.path.expanduser(v[len("local:"):].strip()))
        raise ValueError(f"must be 'synthetic', 'hub' or 'local:<dir>', got {v!r}")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in TASKS]
        if bad or not v:
            raise ValueError(f"unknown task(s) {bad or v}; allowed: {', '.join(TASKS)}")
        return list(dict.fromkeys(v))

    @field_validator("train_lang")
    @classmethod
    def _train_lang(cls, v: str) -> str:
        if v not in LANGS:
            raise ValueError(f"unknown language {v!r}; allowed: {', '.join(LANGS)}")
        return v

    @field_validator("eval_langs")
    @classmethod
    def _eval_langs(cls, v: list[str]) -> list[str]:
        bad = [lang for lang in v if lang not in LANGS]
        if bad or not v:
            raise ValueError(f"unknown language(s) {bad or v}; allowed: {', '.join(LANGS)}")
        return list(dict.fromkeys(v))

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: dict[str, int]) -> dict[str, int]:
        for task, k in v.items():
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
            if not 0 <= k <= 32:
                raise ValueError(f"shots for {task} must be in [0, 32], got {k}")
        return {**DEFAULT_SHOTS, **v}

    @field_validator("synthetic_sizes")
    @classmethod
    def _sizes(cls, v: dict[str, int]) -> dict[str, int]:
        for split, n in v.items():
            if split not in ("train", "dev", "test"):
                raise ValueError(f"unknown split {split!r}; allowed: train, dev, test")
            if not 1 <= n <= 1_000_000:
                raise ValueError(f"synthetic size for {split} must be in [1, 1000000], got {n}")
        return {"train": 2000, "dev": 200, "test": 200, **v}


class TeacherConfig(Section):
    """The teacher whose top-K log-probs are cached once per sweep."""

    top_k: int = Field(256, ge=1, le=4096)
    checkpoint: str | None = Field(None, description="model path for teacher mode 'checkpoint'")
    checkpoint_shots: bool = Field(False, description="show the checkpoint teacher the k-shot prompt")
    batch_size: int = Field(256, ge=1, le=4096, description="most examples in one teacher forward")
    batch_tokens: int = Field(16_384, ge=0, le=10_000_000,
                              description="most padded tokens in one teacher forward (0: no limit): short "
                              "prompts batch wider, long ones narrower")
    use_gpu: bool = False
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the decoder layers (auto: on GPU for builds of ≥ 10M teacher "
        "tokens, where the faster forwards repay the compilation; see TEACHER_COMPILE_MIN_TOKENS)")
    cache_dir: str | None = Field(None, description="default: <storage>/teacher_cache")
    wait_s: float = Field(6 * 3600, ge=1, le=7 * 24 * 3600,
                          description="how long a trial that starts while its cache is built waits for it")


class TrainConfig(Section):
    """The student's optimisation: steps, batch, optimiser and the KD loss."""

    steps: int = Field(1000, ge=0, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096, description="global batch (split over workers)")
    lr: float = Field(2e-4, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0, le=1.0)
    warmup_steps: int = Field(50, ge=0, le=1_000_000)
    grad_clip: float = Field(1.0, ge=0, le=1e6)
    kd_loss: KdLoss = "forward_kl"
    kd_temperature: float = Field(1.0, gt=0, le=100)
    jsd_beta: float = Field(0.5, gt=0, lt=1)
    kd_alignment: Literal["causal", "legacy"] = "causal"
    eval_every: int = Field(100, ge=1, le=10_000_000)
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the decoder layers (auto: on GPU for runs of ≥ 1,200 steps, where "
        "the faster steps repay the compilation; see COMPILE_MIN_STEPS)")
    cuda_graphs: bool = Field(
        True, description="on a GPU, one-worker trials whose layers are not compiled record the decoder's forward and "
        "backward once per padded batch length and replay them (the eager step is bound by kernel launches; "
        "trainables/train_graphs.py)")
    seed: int = Field(42, ge=0)
    checkpoint_every: int = Field(1, ge=0, le=1_000_000,
                                  description="checkpoint at every N-th evaluation and the last (0: never); "
                                  "a retried or resumed trial continues from its last checkpoint")
    checkpoints_kept: int = Field(1, ge=1, le=100, description="checkpoints kept per trial (the newest)")


class EvalConfig(Section):
    """Per (task, language) evaluation: subset sizes, decoding, scoring mode."""

    dev_per_pair: int = Field(50, ge=1, le=100_000)
    test_per_pair: int = Field(500, ge=1, le=100_000)
    test_split: Literal["test", "dev"] = "test"
    batch_size: int = Field(512, ge=1, le=65536,
                            description="most sequences per generation batch; the memory budget sizes it below that")
    memory_gb: float = Field(4.0, gt=0, le=4096,
                             description="GPU memory planned for evaluation (KV cache, prefill); the floor of its budget")
    stop_strings: list[str] = Field(default_factory=lambda: ["\n"],
                                    description="a generated answer ends at the first of these (after its first character)")
    # rows × width² of one decoding batch: bounds the attention mask/scores (host memory on CPU)
    # when real prompts are long; ~5 bytes per element measured on CPU, so 2**26 ≈ 350 MB.
    attention_budget: int = Field(2**26, ge=2**12, le=2**40, description="max rows × width² per eval batch")
    max_new_tokens: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_MAX_NEW_TOKENS))
    cuda_graphs: bool = Field(True, description="on a GPU, record each batch's decoding step once as a CUDA graph "
                              "and replay it (the eager step is bound by kernel launches)")
    grouped_attention: bool = Field(True, description="decoding attention reads grouped KV heads as stored instead "
                                    "of copying them once per query head (SDPA models; trainables/decode_attention.py)")
    merge_lora: bool = Field(True, description="evaluate LoRA students with each adapter folded into a copy of its "
                             "base weight (one GEMM per projection; trainables/merged_lora.py)")
    reuse_decoder: bool = Field(True, description="a generation batch reuses the last batch's KV cache and recorded "
                                "decoding step when it fits them (≤ 2× its rows and columns)")
    share_prefixes: bool = Field(True, description="a prompt prefix that several prompts start with (a task's "
                                 "instruction) is prefilled once and its keys and values copied to their rows "
                                 "(trainables/shared_prefix.py)")
    joint_final: bool = Field(True, description="the last evaluation decodes its dev and test items in one pass "
                              "(shared streams: fewer decoding steps), scored apart; its gen/* counts cover both")
    pool_tasks: bool = Field(True, description="one generation pass over every task's items: batches formed by "
                             "prompt length across tasks, each sequence within its own task's token budget "
                             "(fewer, fuller batches than one pass per task)")
    mode: Literal["generate", "score"] = "generate"
    save_predictions: bool = True

    @field_validator("max_new_tokens")
    @classmethod
    def _max_new(cls, v: dict[str, int]) -> dict[str, int]:
        for task, n in v.items():
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
            if not 1 <= n <= 4096:
                raise ValueError(f"max_new_tokens for {task} must be in [1, 4096], got {n}")
        return {**DEFAULT_MAX_NEW_TOKENS, **v}


#: Teacher-cache builds of fewer teacher tokens run eager under `teacher.compile: auto`. An estimate
#: for a 3B teacher on an H200: compiling the layers took the forward from ~60% to ~80% of the bf16
#: peak (bench/gpu_speed.py, 2026-11-28), 3.4 µs a token at 3.2 B parameters, and cost ~35 s (the
#: study bench's compiled few-shot build, run 6: 58.4 s of forwards for 2.27M tokens, where 80% of
#: peak would take 23 s), so it pays from ~10M tokens (the full study's few-shot build: ~11M).
TEACHER_COMPILE_MIN_TOKENS = 10_000_000


def teacher_compile_enabled(teacher: "TeacherConfig", device_type: str, tokens: int) -> bool:
    """Whether a cache build of `tokens` teacher tokens compiles the teacher: 'on', or 'auto' on GPU
    for builds of ≥ TEACHER_COMPILE_MIN_TOKENS."""
    if teacher.compile == "auto":
        return device_type == "cuda" and tokens >= TEACHER_COMPILE_MIN_TOKENS
    return teacher.compile == "on"


#: Training runs shorter than this many steps train eager under `train.compile: auto`. Measured on
#: an H200 at the study's sizes (3B LoRA, batch 8 of ~124 tokens; `bench/gpu_speed.py --shape study`,
#: 2026-12-04): the compiled step took 125 ms against 217 ms eager, but its first step took 104.5 s
#: against 3.2 s, so compiling pays for itself after ~1,100 steps. With the compile cache warm (a
#: later trial on the same node) the first step took 52.5 s and it pays after ~540: the threshold
#: is the cold case, which every trial of a sweep's first wave pays.
COMPILE_MIN_STEPS = 1200


def train_compile_enabled(train: "TrainConfig", device_type: str) -> bool:
    """Whether a trial compiles its decoder layers: 'on', or 'auto' on GPU for runs of ≥ COMPILE_MIN_STEPS."""
    if train.compile == "auto":
        return device_type == "cuda" and train.steps >= COMPILE_MIN_STEPS
    return train.compile == "on"


class PolicyConfig(Section):
    """A λ policy: the KD weight added to CE (loss = CE + λ·KD), by name and parameters.

    Names and parameters are listed in `trainables.policies`; composite policies nest this shape.
    They are checked here, before any trial runs (whether every task of the sweep is covered is
    checked when the trial builds the policy)."""

    name: str = "fixed"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "PolicyConfig":
        # The bare default is the policy slot of variants without a teacher (sft, base, fewshot).
        if self.name == "fixed" and not self.params:
            return self
        from trainables.policies import check_policy  # lazy: the policies import torch

        check_policy(self.name, self.params)
        return self


class VariantConfig(Section):
    """One cell of the sweep's table: a condition crossed with a λ policy."""

    condition: Condition = "distill"
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    label: str = ""
    teacher_mode: TeacherMode | None = Field(None, description="default: from the condition")
    protected: bool = Field(False, description="never stopped early by the scheduler (baselines)")
    lr: float | None = Field(None, gt=0, le=1e6, description="this cell's peak learning rate (default: train.lr)")

    @model_validator(mode="after")
    def _defaults(self) -> "VariantConfig":
        if self.teacher_mode is None and self.condition in ("distill", "control"):
            object.__setattr__(self, "teacher_mode", "fewshot" if self.condition == "distill" else "zeroshot")
        if not self.label:
            object.__setattr__(self, "label", default_label(self))
        return self

    @property
    def trains(self) -> bool:
        """Whether this variant trains a student."""
        return self.condition in TRAINING_CONDITIONS

    @property
    def uses_teacher(self) -> bool:
        """Whether this variant reads a teacher cache."""
        return self.condition in ("distill", "control")


def default_label(v: VariantConfig) -> str:
    """A short human label for a variant, e.g. 'distill λ=0.05'."""
    lr = f" lr={v.lr:g}" if v.lr is not None else ""
    if not v.uses_teacher:
        return v.condition + lr
    if v.policy.name == "fixed":
        lam = v.policy.params.get("lam", 0.0)
        return f"{v.condition} λ={lam:g}{lr}"
    return f"{v.condition} {v.policy.name}{lr}"


class ResourcesConfig(Section):
    """What one trial asks of the cluster."""

    num_workers: int = Field(1, ge=1, le=1024)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, le=256)
    gpus_per_worker: float | Literal["auto"] = Field(
        "auto", description="GPUs per worker; fractions share one GPU between trials; auto: from the memory plan")
    max_concurrent_trials: int | None = Field(None, ge=1, le=10_000, description="default: from cluster")
    start_ahead: int | Literal["auto"] = Field(
        "auto", description="trials per GPU that start (Ray worker, weights into host memory, data, teacher cache) "
        "while the GPU's shares are all in use, then wait for one to free (trainables/gpu_slots.py); auto: 2 with "
        "gpus_per_worker=auto and one worker per trial (fewer where host memory cannot hold their weights), else 0")
    max_retries: int = Field(2, ge=0, le=100, description="retries of a trial after a transient failure "
                             "(out of memory, a lost worker); deterministic errors are not retried")

    @model_validator(mode="after")
    def _fractional(self) -> "ResourcesConfig":
        if isinstance(self.gpus_per_worker, float) and not 0 < self.gpus_per_worker <= 8:
            raise ValueError(f"gpus_per_worker must be 'auto' or in (0, 8], got {self.gpus_per_worker}")
        if isinstance(self.start_ahead, int) and not 0 <= self.start_ahead <= 4:
            raise ValueError(f"start_ahead must be 'auto' or in [0, 4], got {self.start_ahead}")
        if self.use_gpu and self.gpus_per_worker != "auto" and self.gpus_per_worker < 1 and self.num_workers > 1:
            raise ValueError("fractional gpus_per_worker needs num_workers=1 (two ranks on one GPU break NCCL)")
        return self


class TrialConfig(Section):
    """Everything one trial needs, as the Tune driver function receives it."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    variant: VariantConfig = Field(default_factory=VariantConfig)
    #: Filled by the sweep: where the experiment lives and where the teacher caches are.
    experiment_dir: str = ""
    cache_paths: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _corpus(self) -> "TrialConfig":
        fill_random_corpus(self.model, self.data)
        return self


def fill_random_corpus(model: ModelConfig, data: DataConfig) -> None:
    """A random model's tokenizer learns from the sweep's data unless model.random.corpus names other text."""
    from trainables.random_shapes import is_random

    if is_random(model.name) and model.random.corpus is None:
        model.random.corpus = data.source
