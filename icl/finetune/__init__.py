"""Fine-tuning on few labelled examples (``method=finetune``): the inputs as token requests,
what is trained on a copy of the model, the two objectives, and the training loop.

``inputs`` (requests, truncation, batches), ``trainable`` (the model's copy, its trainable
parameters, LoRA, the classifier head), ``objective`` (label-word log-probs and head logits,
batched), ``loop`` (AdamW, evaluation on the development set, the best checkpoint).
"""
