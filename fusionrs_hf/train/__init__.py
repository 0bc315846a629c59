"""Thin example trainers: tri-modal CLIP (:mod:`.clip`) and VLM LoRA instruction tuning (:mod:`.vlm`).

Both need the optional training stack (``transformers``, ``peft``, ``tokenizers``; ``open_clip``
for open_clip models) and import it lazily, so ``import fusionrs_hf`` never does. The retrieval
metrics they report live in :mod:`fusionrs_hf.metrics` and need only numpy.
"""
