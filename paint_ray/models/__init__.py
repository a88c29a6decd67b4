"""Models: one spec string to a loaded open_clip CLIP, identified by the digest of its weights.

`registry` looks a model up by spec (embedded toy models, open_clip tags, checkpoint files, hub repos,
local folders) and verifies it by digest; `build` builds any architecture from its full open_clip config;
`checkpoints` reads and writes safetensors and open_clip folders; `pretrain` and `grow` make the embedded
models; `normalize` turns uint8 images into model input; `heads` builds zero-shot heads and the logits of
a batch under a head.

May import: errors, identity, paths, storage, devices, world, tasks, data
"""
