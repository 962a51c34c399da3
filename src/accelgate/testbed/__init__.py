"""The CPU test bed: tiny pipelines and judges trained on a synthetic world made by code.

Why: random-weight tiny pipelines ignore their prompts and decide the image in their first
step, so a CPU run can prove the gate's mechanics but not its verdicts. These models learned
a small world (coloured shapes on plain or gradient backgrounds), so prompts, guidance and
late steps matter, and judges trained on the same world give the distribution metrics a
meaning on CPU.

- `world`: scenes, captions, DiT class labels, edit triples, and `evaluation_items(n)`,
  the deterministic held-out prompt set (caption, class label, edit) for the test bed.
- `text`: the world's tokenizers; `architectures`: every component's configuration.
- `train` (`python -m accelgate.testbed.train`): trains everything into `weights/`
  (+ `MANIFEST.json`: command, seed, step budgets, versions, sha256 of every file).
- `build`: `build(family, weights=None, resolution=32)` assembles the diffusers pipeline of
  one of 7 families (`FAMILIES`: tiny-sd, tiny-sdxl, tiny-sd-img2img, tiny-pix2pix,
  tiny-pixart, tiny-dit, tiny-sd3) from the stored components, with the recommended
  steps, guidance and call keyword arguments; `call_arguments` builds one call.
- `judges`: the trained judges in the forms the metric classes take (transformers CLIP +
  processor, open_clip model + tokenizer, AestheticHead, an ImageFeatureExtractor);
  `image_damage`: the blur, noise, colour cast and blockiness the preference judges learn
  to dislike (not `accelgate.backends.damage`, which damages pipelines).
- `evaluate`, `measure`: judgements (attribute / class accuracy, edit success, domain
  FID/KID) and instruments (relative perturbation of the denoiser output, call counting),
  used by `benchmarks/testbed.py`.
"""
