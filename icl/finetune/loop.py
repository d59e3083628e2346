"""The training loop: AdamW over the trainable parameters, batches in a seeded order, the
development set scored every ``eval_every`` steps, early stopping, and the best checkpoint
(by development accuracy, then loss) loaded back at the end."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from icl.errors import ICLError
from icl.finetune.inputs import BatchOrder, Encoded
from icl.finetune.objective import cross_entropy, label_word_logprobs, last_token_features
from icl.finetune.trainable import load_trainable_state, trainable_state

EVAL_BATCH_SIZE = 16


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    eval_every: int
    patience: int
    lr: float
    weight_decay: float
    seed: int


@dataclass
class Classifier:
    """The model being trained and how it scores a batch: label words (prompt) or the head
    on the last token's hidden state (head; cached when no LM parameter is trained)."""

    model: torch.nn.Module
    kind: str
    options: tuple[tuple[int, ...], ...]
    pad: int
    device: torch.device
    head: torch.nn.Module | None = None
    frozen: bool = False
    _features: dict = field(default_factory=dict)

    def scores(self, batch: list[Encoded]) -> torch.Tensor:
        """[batch, classes] class scores, differentiable in the trainable parameters."""
        if self.kind == "prompt":
            return label_word_logprobs(self.model, batch, self.options, self.pad, self.device)
        return self.head(self.features(batch))

    def features(self, batch: list[Encoded]) -> torch.Tensor:
        if not self.frozen:
            return last_token_features(self.model, batch, self.pad, self.device)
        missing = [e for e in batch if e.tokens not in self._features]
        if missing:  # a frozen LM gives each input the same features every step
            with torch.no_grad():
                values = last_token_features(self.model, missing, self.pad, self.device)
            self._features.update(zip((e.tokens for e in missing), values))
        return torch.stack([self._features[e.tokens] for e in batch])

    @torch.no_grad()
    def predict(self, examples: list[Encoded], batch_size: int = EVAL_BATCH_SIZE):
        """[examples, classes] scores in batches of similar length (little padding)."""
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
        out = torch.empty(len(examples), len(self.options))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.scores([examples[i] for i in chunk]).float().cpu()
        return out

    def parameters(self) -> list[torch.nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + (list(self.head.parameters()) if self.head is not None else [])


@dataclass
class Trained:
    best_step: int
    best_dev_accuracy: float
    best_dev_loss: float
    steps_run: int
    train_s: float
    log: list[dict]


def dev_score(classifier: Classifier, dev: list[Encoded]) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on the development set."""
    scores = classifier.predict(dev)
    labels = [e.label for e in dev]
    accuracy = float((scores.argmax(-1) == torch.tensor(labels)).float().mean())
    return accuracy, float(cross_entropy(scores, labels))


def nan_loss_error(step: int, lr: float) -> ICLError:
    return ICLError(
        f"the training loss is not finite at step {step}; nothing was written. Lower "
        f"finetune.lr (now {lr}), or train in float32 (model.dtype=float32)"
    )


def train(classifier: Classifier, train_set, dev, schedule: Schedule) -> Trained:
    """Train, evaluating on dev at step 0 and every eval_every steps; keep the best."""
    params = classifier.parameters()
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    batches = BatchOrder(len(train_set), schedule.batch_size, schedule.seed)
    started = time.perf_counter()
    accuracy, loss = dev_score(classifier, dev)
    log = [{"step": 0, "train_loss": None, "dev_accuracy": accuracy, "dev_loss": loss}]
    best = (accuracy, -loss, 0)
    best_state = trainable_state(classifier.model, classifier.head)
    stale, step = 0, 0
    for step in range(1, schedule.steps + 1):
        batch = [train_set[i] for i in batches.next()]
        loss = cross_entropy(classifier.scores(batch), [e.label for e in batch])
        if not math.isfinite(loss.item()):
            raise nan_loss_error(step, schedule.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        line = {"step": step, "train_loss": loss.item(), "dev_accuracy": None, "dev_loss": None}
        if step % schedule.eval_every == 0 or step == schedule.steps:
            accuracy, dev_loss = dev_score(classifier, dev)
            line.update(dev_accuracy=accuracy, dev_loss=dev_loss)
            if (accuracy, -dev_loss) > best[:2]:
                best, stale = (accuracy, -dev_loss, step), 0
                best_state = trainable_state(classifier.model, classifier.head)
            else:
                stale += 1
        log.append(line)
        if schedule.patience and stale >= schedule.patience:
            break
    load_trainable_state(classifier.model, classifier.head, best_state)
    return Trained(best[2], best[0], -best[1], step, time.perf_counter() - started, log)
