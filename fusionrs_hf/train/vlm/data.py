"""The trainer's data: streamed chat samples, their prompts, the collator that masks all but the answer, and
texts to train the tiny model's tokenizer on."""

from __future__ import annotations

from collections.abc import Iterator

import torch

IGNORE_INDEX = -100


class VLMStream(torch.utils.data.IterableDataset):
    """Single chat samples for ``Trainer``, from :class:`fusionrs_hf.vlm_data.VLMIterable`.

    The streaming reader yields lists of samples (one list per row, as a row may give two in
    setting C); this flattens them. Worker split, DDP rank split, shuffle and ``set_epoch`` are
    the reader's own (see :mod:`fusionrs_hf.torch`). Under ``transformers.Trainer``, which splits
    an iterable dataset across processes itself, pass ``rank=0, world_size=1`` (as
    :func:`train_vlm` does) so the split is not made twice.
    """

    def __init__(self, repo: str, *, config: str = "iraware", split: str = "train", setting: str = "B-iraware",
                 task: str = "ir_caption", limit: int | None = None, shuffle: bool = False, seed: int = 0,
                 on_error: str = "raise", prompts: dict[str, str] | None = None, **reader_kw):
        super().__init__()
        from ...vlm_data import VLMIterable

        self.repo, self.config, self.split, self.setting, self.task = repo, config, split, setting, task
        self.limit = limit
        self.storage_options = reader_kw.get("storage_options")
        self.prompts = dict(prompts or {})
        """Sample setting (``A-original``/``B-iraware``/...) -> the instruction replacing the paper's template."""
        self.reader = VLMIterable(repo, config, split, batch_size=1, shuffle=shuffle, seed=seed, on_error=on_error,
                                  setting=setting, task=task, **reader_kw)

    def set_epoch(self, epoch: int) -> None:
        self.reader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        n = 0
        for samples in self.reader:
            for sample in samples:
                prompt = self.prompts.get(sample.get("setting"))
                if prompt is not None:
                    sample = with_prompt(sample, prompt)
                yield sample
                n += 1
                if self.limit is not None and n >= self.limit:
                    return

    def count(self) -> int:
        """Samples per epoch, from a pass over the text columns only (no image is read)."""
        from PIL import Image

        from ... import load
        from ...schema import IMAGE_FIELDS
        from ...vlm_data import vlm_samples

        placeholder = Image.new("RGB", (1, 1))
        ds = load(self.config, split=self.split, streaming=True, repo=self.repo,
                  storage_options=self.storage_options).remove_columns(list(IMAGE_FIELDS))
        n = sum(len(vlm_samples({**row, "ir": placeholder}, self.setting, self.task)) for row in ds)
        n //= self.reader.world_size
        return min(n, self.limit) if self.limit is not None else n


def with_prompt(sample: dict, prompt: str) -> dict:
    """``sample`` with the text of its user turn replaced by ``prompt`` (images and answer kept)."""
    messages = []
    for m in sample["messages"]:
        if m["role"] == "user":
            content = [{**c, "text": prompt} if c.get("type") == "text" else c for c in m["content"]]
            m = {**m, "content": content}
        messages.append(m)
    return {**sample, "messages": messages}


def vlm_dataset(repo: str, **kwargs) -> VLMStream:
    """Shorthand for :class:`VLMStream`."""
    return VLMStream(repo, **kwargs)


class VLMCollator:
    """Samples -> padded model inputs with ``labels`` that supervise only the assistant's answer.

    For each sample the chat template is applied twice: to the whole conversation, and to the
    conversation without its final assistant turn plus the generation prompt. The second must be a
    token prefix of the first (a template for which it is not is rejected), and its length is the
    number of leading tokens whose labels are ``-100``. Padding (right side) is ``-100`` as well.

    The images go through the processor once, with the whole conversations. The prompt's length
    in the processed ids is found from the text alone: tokenized before image expansion, the
    prompt is a prefix of the conversation, and the processor's expansion of the image
    placeholders (all in the prompt) adds ``len(processed) - len(text ids)`` tokens to that
    prefix. That is checked: the processed ids after the prefix must equal the conversation's
    text ids after the prompt, token for token, so exactly the answer is supervised and every
    image token is masked. Where a processor's text handling does not allow the check, the prompt
    is run through the processor (images included) as a fallback.
    """

    def __init__(self, processor, *, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length
        tok = getattr(processor, "tokenizer", processor)
        tok.padding_side = "right"
        self.tokenizer = tok

    def _texts(self, sample: dict) -> tuple[str, str]:
        msgs = sample["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise ValueError(f"sample {sample.get('sample_id')}: the last message must be the assistant's answer")
        full = self.processor.apply_chat_template(msgs, tokenize=False)
        prompt = self.processor.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        return full, prompt

    def _encode(self, texts: list[str], images: list) -> dict:
        kw = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(images):
            kw["images"] = images
        return self.processor(**kw)

    def _prompt_len_from_text(self, ids: list[int], full_text_ids: list[int], prompt_text_ids: list[int]) -> int | None:
        """Masked prefix length in the processed ``ids`` (no padding), or None if the check fails."""
        k = len(prompt_text_ids)
        if k >= len(full_text_ids) or full_text_ids[:k] != prompt_text_ids:
            return None
        n = k + len(ids) - len(full_text_ids)  # image placeholders expanded inside the prompt
        if n < k or ids[n:] != full_text_ids[k:]:
            return None
        return n

    def _prompt_len_processed(self, prompt: str, imgs: list, ids: list[int]) -> int | None:
        p_ids = self._encode([prompt], [imgs])["input_ids"][0].tolist()
        n = len(p_ids)
        return n if n < len(ids) and ids[:n] == p_ids else None

    def __call__(self, samples: list[dict]) -> dict:
        fulls, prompts, images = [], [], []
        for s in samples:
            full, prompt = self._texts(s)
            fulls.append(full)
            prompts.append(prompt)
            images.append([im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im
                           for im in s.get("images") or []])  # the reader's images are RGB already: no copy
        batch = self._encode(fulls, images)
        ids = batch["input_ids"]
        labels = ids.clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        text_ids = self.tokenizer(fulls + prompts)["input_ids"]
        lengths = batch["attention_mask"].sum(1).tolist()
        for i, (prompt, imgs, s) in enumerate(zip(prompts, images, samples, strict=True)):
            row = ids[i, : int(lengths[i])].tolist()
            n = self._prompt_len_from_text(row, text_ids[i], text_ids[len(samples) + i])
            if n is None:
                n = self._prompt_len_processed(prompt, imgs, row)
            if n is None:
                raise ValueError(
                    f"sample {s.get('sample_id')}: the chat template's prompt is not a token prefix of the "
                    "full conversation, so the prompt cannot be masked"
                )
            labels[i, :n] = IGNORE_INDEX
        batch["labels"] = labels
        if self.max_length is not None and ids.shape[1] > self.max_length:
            raise ValueError(f"batch of {ids.shape[1]} tokens exceeds max_length {self.max_length}")
        return dict(batch)


def _texts_for_tokenizer(repo: str, config: str, storage_options: dict | None = None) -> list[str]:
    from ...vlm_data import TEMPLATES
    from ..clip import read_captions

    return [*read_captions(repo, config, storage_options=storage_options), *TEMPLATES.values()]
