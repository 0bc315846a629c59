"""A tokenizer trained here, from the captions, so tiny models and tests never download one.

Real checkpoints bring their own tokenizer; this one exists for the offline path (``--model
tiny``, CI, the tests). It is a byte-level BPE (no unknown tokens: any caption, chat template or
prompt encodes) trained with ``tokenizers`` and wrapped as a ``transformers``
``PreTrainedTokenizerFast``, so it plugs into ``CLIPModel``, processors and ``Trainer``
exactly as a downloaded one would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BOS, EOS, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<|pad|>", "<|unk|>"


def train_bpe_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 800,
    model_max_length: int = 77,
    extra_special_tokens: Sequence[str] = (),
    add_bos_eos: bool = True,
    lowercase: bool = False,
):
    """Train a byte-level BPE on ``texts`` and return a ``PreTrainedTokenizerFast``.

    ``add_bos_eos`` wraps every encoding as ``<|startoftext|> ... <|endoftext|>`` (what CLIP's
    text tower expects: it pools at the EOS position). Chat models want it off, since their
    chat template writes its own markers. ``extra_special_tokens`` (e.g. ``<|image_pad|>``)
    are added as single, never-split tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, UNK, BOS, EOS, *[t for t in extra_special_tokens if t not in (PAD, BOS, EOS, UNK)]]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if add_bos_eos:
        bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=model_max_length,
    )
    extra = [t for t in extra_special_tokens if t not in (PAD, BOS, EOS, UNK)]
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    return fast
