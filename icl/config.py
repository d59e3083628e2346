"""Typed config schemas.

Every YAML file under ``conf/<group>/`` names one of these schemas in its defaults list, so a
misspelt key fails when the config is composed, before any data or model is loaded.
``register_configs`` stores them in Hydra's ConfigStore: with ``icl.cli``, the only code that
touches Hydra. The names each field accepts live with the concept that owns them (label settings
in ``icl.demos``, rules in ``icl.scoring``, engines in ``icl.lm.engines``, methods in
``icl.methods``) and are checked when a cell is planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ModelConfig:
    """A causal LM: a hub id, a local folder, a GGUF file, an installed model package, or tiny."""

    name: str = MISSING
    # hub | folder | gguf | package | tiny
    source: str = MISSING
    # hub id, folder path or GGUF file path (null for package and tiny)
    path: str | None = MISSING
    # for source=package: the distribution that ships the GGUF and the file inside it
    package: str | None = None
    package_file: str | None = None
    # for source=package with an assembling package (chunks joined to one file on first use)
    assemble_module: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # context length; null reads max_position_embeddings from the model config
    max_length: int | None = None
    # cache the dequantised GGUF as safetensors (under $ICL_CACHE_DIR or ~/.cache/icl)
    cache: bool = True
    revision: str | None = None
    # for source=tiny: the random-weight architecture and its seed
    tiny_arch: str = "llama"
    tiny_seed: int = 0


@dataclass
class DatasetConfig:
    """Arguments of ``datasets.load_dataset``: a hub id or a builder with data files."""

    path: str = MISSING
    name: str | None = None
    data_files: dict[str, Any] | None = None
    # builder keyword arguments, e.g. {delimiter: ","} for csv
    kwargs: dict[str, Any] = field(default_factory=dict)
    # how one raw row becomes fields: null (columns as they are) or label_first_token
    # (SST-2 files: "<label> <text>" on each line of a text builder's "text" column)
    line_format: str | None = None
    # columns renamed after loading, so a hub twin can share its local twin's templates
    rename_columns: dict[str, str] = field(default_factory=dict)


@dataclass
class TemplateConfig:
    """An input format and one label word per class; the answer follows ``answer_sep``."""

    input: str = MISSING
    # Any, not str: an unquoted YAML yes/no/on/off would become "True"/"False" under str;
    # kept as a bool, the template check can say to quote it
    label_words: list[Any] = MISSING
    # what separates the input format from the label word; the word is scored with it
    answer_sep: str = " "
    # what separates two demonstrations, and the last demonstration from the query
    demo_sep: str = "\n\n"
    # text before the first demonstration (an instruction), followed by demo_sep when set
    instruction: str = ""


@dataclass
class TaskConfig:
    """A classification task: where its rows live, which fields it renders, its label set."""

    name: str = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    text_fields: list[str] = MISSING
    label_field: str = "label"
    # raw label values in class order (strings or ints as they appear in the data)
    label_values: list[Any] = MISSING
    # the readable class names, one per label value
    label_names: list[str] = MISSING
    # rows whose label is not in label_values: error | drop (counted in metrics.json warnings)
    unknown_labels: str = "error"
    # rows with a rendered text field missing, null or empty: error | drop (counted likewise)
    missing_text: str = "error"
    # the encoding of local csv, json and text data files
    encoding: str = "utf-8"
    demo_split: str = "train"
    eval_split: str = "test"
    # when demo_split == eval_split, the share of its rows held out for evaluation
    eval_share: float = 0.5
    split_seed: int = 0
    templates: dict[str, TemplateConfig] = MISSING
    default_template: str = MISSING
    # the local data folder some tasks read (../shared/data beside the checkout by default)
    data_dir: str | None = None
    version: int = 1


@dataclass
class DemosConfig:
    """Which demonstrations a prompt shows and which labels they carry."""

    k: int = 0
    labels: str = "gold"
    seed: int = 1
    sampling: str = "uniform"
    # one demonstration set per (seed, k) for every test example (Min et al. 2022), or fresh
    per_example: bool = False
    # the k demonstrations are the first k of the 2k ones for the same seed
    nested: bool = True
    # which pool examples: random (the seeded draw above) | knn (nearest by sentence
    # embedding) | knn_diverse (nearest, made diverse by maximal marginal relevance) | bm25
    # (lexical); retrieval chooses per test example (icl/retrieval/)
    selection: str = "random"
    # their order in the prompt: pool (as the selection gives them: random's draw; retrieval
    # nearest last) | similar_last | similar_first | random (seeded) | by_label (gold class)
    order: str = "pool"
    # knn_diverse: the weight of similarity to the input against similarity to the ones
    # already chosen (1.0 is plain knn)
    diversity_lambda: float = 0.5
    # the text fields retrieval compares (null: all of the task's text_fields), e.g. [hypothesis]
    retrieve_by: list[str] | None = None
    # labels=ood_inputs: the task whose texts replace the demonstration inputs; each task's
    # default is conf/ood/<task>.yaml, another corpus is chosen with corpus@demos.ood_task=NAME
    ood_task: TaskConfig | None = None


@dataclass
class EvalConfig:
    # test examples: a positive integer (at most the test pool's size) or all. Any: see below
    n_test: Any = 200
    # which test examples: fixed across demonstration seeds so only the demonstrations vary
    seed: int = 0
    # rows per forward: a positive integer, or auto (16 on CPU; on CUDA what fits free memory,
    # measured by a probe batch and halved if it still runs out). Any: OmegaConf has no Union
    batch_size: Any = "auto"
    # the perplexity of the whole k-shot prompt costs a full-vocabulary head at every query
    # token (about 25% of the scoring pass at k=16 on SmolLM2) and no table or figure reads
    # it: off unless asked for
    kshot_perplexity: bool = False
    # the perplexity of each zero-shot prompt (template and input, no demonstrations): a pass of
    # its own at k>0 (at k=0 the scoring pass gives it, at the cost of full-vocabulary logits
    # at every query token); off, rows and metrics hold null for it
    zero_shot_perplexity: bool = True
    # keep what does not depend on the demonstrations (zero-shot perplexities, k=0 option
    # scores) in the score cache across processes (icl/lm/score_cache.py); false bypasses it
    cache: bool = True
    progress: bool = True


@dataclass
class ScoringConfig:
    engine: str = "auto"  # auto | prefix | prefix_shared | naive
    # the rule behind each prediction, accuracy and macro-F1 (see icl/scoring.py)
    rule: str = "direct"
    # more rules whose predictions and metrics are reported alongside ``rule``'s
    rules: list[str] = field(default_factory=list)
    # calibrated: the content-free inputs that estimate the label bias (Zhao et al. 2021)
    content_free: list[str] = field(default_factory=lambda: ["N/A", "", "[MASK]"])
    # pmi: the domain premise; null takes the template's input after its last field, stripped
    domain_premise: str | None = None


@dataclass
class DecodingConfig:
    """How method=generate writes its answers (icl/lm/sampling.py, icl/lm/decoding.py)."""

    strategy: str = "greedy"  # greedy | sample
    # sample: applied in this order; top_k 0 and top_p 1.0 are off
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # an answer ends at a newline or the demonstration separator, or after this many tokens
    max_new_tokens: int = 5
    # how an answer becomes a class: exact (a label word, normalised) | prefix (starts with one)
    match: str = "exact"
    # answers drawn per test example (sample; more than one also reports the majority vote)
    samples: int = 1
    # none | draft (a smaller model of the same tokenizer) | prompt_lookup
    speculative: str = "none"
    # speculative=draft: the draft model, e.g. +model@decoding.draft=smollm2-135m
    draft: ModelConfig | None = None
    draft_tokens: int = 4
    # prompt_lookup: the longest n-gram matched against the prompt
    lookup_ngram: int = 3
    # the answers' random stream (with the test example and the sample index)
    seed: int = 0
    # plain decoding writes this many answers side by side: a positive integer, or auto (16 on
    # CPU, 128 on CUDA); each row holds its own copy of the prefix's cache. Any: as batch_size
    batch_size: Any = "auto"


@dataclass
class FinetuneConfig:
    """How method=finetune trains on the labelled examples (icl/methods/finetune.py)."""

    # prompt (the template's label words at the answer position) | head (a classifier on the
    # last token's final hidden state)
    kind: str = "prompt"
    # kind=head: linear | mlp
    head: str = "linear"
    # training examples per class: the demonstrations a k = k_per_class x classes balanced
    # ICL cell of the same seed shows; the development set is the next dev_per_class per class
    k_per_class: int = 16
    dev_per_class: int = 16
    # the top N transformer layers (plus the final norm, and the head) are trained; 0: the
    # final norm and the head only; all: every parameter. Any: an integer or "all"
    train_layers: Any = 2
    # LoRA of this rank on the attention projections (through peft) in place of
    # train_layers; 0 is off
    lora_r: int = 0
    lora_alpha: float = 16.0
    lr: float = 1e-4
    weight_decay: float = 0.0
    steps: int = 100
    batch_size: int = 8
    # the development set is scored every eval_every steps; the best step's weights are kept
    eval_every: int = 10
    # stop when this many evaluations in a row bring no better development accuracy (0: never)
    patience: int = 3
    # inputs longer than this many tokens (template included) lose the end of their text
    max_tokens: int = 64
    # the training stream (head initialisation, LoRA initialisation, batch order), with the
    # demonstration seed
    seed: int = 0


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "icl"
    entity: str | None = None
    mode: str | None = None  # online | offline | disabled; null leaves WANDB_MODE in charge
    tags: list[str] = field(default_factory=list)


@dataclass
class MethodConfig:
    """What a cell does with its plan (``icl.methods``): score label words, generate, or
    fine-tune."""

    name: str = "score"


@dataclass
class RunConfig:
    # a method that needs no language model or no task (a synthetic study) leaves them null
    model: ModelConfig | None = None
    task: TaskConfig | None = None
    method: MethodConfig = field(default_factory=MethodConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # the template name; null takes the task's default_template
    template: str | None = None
    # how a prompt is laid out: plain (text, demo_sep between demonstrations) | chat (the
    # tokenizer's chat template: each demonstration a user and an assistant turn; icl/chat.py)
    format: str = "plain"
    # label words (one per class, in class order) in place of the template's own, e.g. for
    # the label-word study of Gao et al. 2021: label_words=[terrible,great]
    label_words: list[Any] | None = None
    # rerun a cell whose metrics.json exists
    overwrite: bool = False
    # where the run writes; the CLI sets it to Hydra's output folder
    out_dir: str | None = None


def register_configs() -> None:
    """Store the schemas so YAML files can name them in their defaults lists."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="demos", name="demos_schema", node=DemosConfig)
    cs.store(group="eval", name="eval_schema", node=EvalConfig)
    cs.store(group="scoring", name="scoring_schema", node=ScoringConfig)
    cs.store(group="decoding", name="decoding_schema", node=DecodingConfig)
    cs.store(group="finetune", name="finetune_schema", node=FinetuneConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
