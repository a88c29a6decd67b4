"""Fine-tuning the image encoder against frozen zero-shot heads (PAINT step 3), written once.

`job` is one fine-tuning job keyed by content and `run_job`, which both backends call; `finetune` is the
training loop (`Finetuner`: AdamW, warm-up + cosine, clipping, checkpoint and resume on any device);
`recipe` is the reference code's recipe and per-task epochs; `augment` is its RandomResizedCrop, batched.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights
"""
