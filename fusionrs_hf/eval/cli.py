"""Evaluate an image–text model on a FusionRS split the way the paper's Table 4 is computed: IR→Text,
Text→IR, RGB→IR, IR→RGB at R@1/5/10 and Mean R (plus RGB→Text, Text→RGB), and zero-shot scene
classification of the NWPU rows (class-name prompts, RGB and IR).

The model is a transformers CLIP Hub id or folder, an open_clip name (NAME[:PRETRAINED]), or a
train_clip checkpoint folder (OUT/checkpoint); or give --embeddings, a .npz/.parquet of sample_id
+ rgb/ir/text vectors from any model. Embeddings of a model are cached (--cache-dir, --no-cache).
Pixels (--preprocess): by default a model's own, i.e. a released transformers CLIP model (FusionRS-CLIP,
openai/clip-vit-base-patch32) through its CLIPImageProcessor on fully decoded images, as the authors
measured it, and a train_clip checkpoint as it was trained.

Protocols (--protocol): rc4 (default on repos whose rows carry the release flags) scores only the
evaluation representatives and counts texts with the same normalised caption key as positives, as
the authors' scorer (score_retrieval_embeddings.py) does; all-rows scores every row with the same positive
rules. The representatives of one source (a per-source config such as rsicd) are the release's per-source
set (results/clip/retrieval/per_source). Text key (--text-key): caption (default, normalized_caption_key)
or lowercase (eval_clip_retrieval.py's key: the caption lower-cased, whitespace collapsed, which the
release's results/clip/retrieval figures use). Ties (--ties):
pessimistic (ours: a wrong item tied with the best right one counts against the query) or topk
(the authors': stable top-k, ties in gallery order). The output names both.

Examples:
  fusionrs eval ./fusionrs --model runs/clip/checkpoint --split test
  fusionrs eval ./fusionrs --model openai/clip-vit-base-patch32 --split test --json
  fusionrs eval ./fusionrs --embeddings mine_test.npz --ties topk
  fusionrs eval ./fusionrs --config rsicd --embeddings mine_rsicd_test.npz --ties topk --text-key lowercase
  fusionrs eval ./fusionrs --model ViT-B-32:openai --protocol all-rows --save-embeddings vit_test.npz

Exit codes: 0 scored, 2 usage or input problem (missing split, a protocol the rows cannot follow, an
embedding file that lacks scored samples, a shard that is gone or unreadable, an image that does not decode,
a checkpoint that is not plain weights), 1 any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

from ..layout import CONFIG_NAMES, SPLITS
from .embed import DEFAULT_BATCH_SIZE, PRECISIONS, PREPROCESS_CHOICES
from .protocol import PROTOCOL_CHOICES, TEXT_FIELDS, TEXT_KEYS


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="FusionRS repo: local folder, fsspec URL or Hub dataset id")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="transformers CLIP id/folder, open_clip NAME[:PRETRAINED], or a train_clip "
                                     "checkpoint folder")
    src.add_argument("--embeddings", help=".npz or .parquet with sample_id and rgb/ir/text vectors")
    p.add_argument("--config", default="default",
                   help=f"config of the repo (default: %(default)s): {', '.join(CONFIG_NAMES)}, or one of the repo's "
                        "own sources (fusionrs_sources.json)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split (default: %(default)s)")
    p.add_argument("--protocol", default="auto", choices=PROTOCOL_CHOICES,
                   help="auto: rc4 when the rows carry release flags, else all-rows (default: %(default)s)")
    p.add_argument("--ties", default="pessimistic", choices=("pessimistic", "topk", "ours", "authors"),
                   help="tie rule: pessimistic (ours) or topk (the authors') (default: %(default)s)")
    p.add_argument("--text", dest="text_field", default="caption", choices=TEXT_FIELDS,
                   help="which text is the caption side (default: %(default)s)")
    p.add_argument("--text-key", default="caption", choices=tuple(TEXT_KEYS),
                   help="what texts share to be positives: caption = the release's normalized_caption_key, as "
                        "score_retrieval_embeddings.py (default); lowercase = the text lower-cased with whitespace "
                        "collapsed, as eval_clip_retrieval.py (the release's results/clip/retrieval figures)")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file")
    p.add_argument("--preprocess", default="auto", choices=PREPROCESS_CHOICES,
                   help="pixels of a --model: auto (default) = the model's own: a train_clip checkpoint what it "
                        "was trained with (its fusionrs_clip.json), any other transformers CLIP model (the "
                        "released FusionRS-CLIP, openai/...) its CLIPImageProcessor on fully decoded PIL images, as "
                        "its published numbers were measured; open_clip models ours. processor / fast force one "
                        "(fast: our reduced-scale decode and bilinear resize)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: fp16 autocast on CUDA, fp32 on CPU (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: $FUSIONRS_CACHE/eval or "
                                                     "~/.cache/fusionrs/eval)")
    p.add_argument("--no-cache", action="store_true", help="embed afresh and write no cache file")
    p.add_argument("--save-embeddings", default=None, help="also write the vectors here (.npz, the authors' format)")
    p.add_argument("--limit", type=int, default=None, help="embed the first N rows only (a quick look; not a result)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip zero-shot scene classification")
    p.add_argument("--revision", default=None, help="Hub revision of the repo")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (ours, nor transformers' or huggingface_hub's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    from ..storage import add_storage_option_argument

    add_storage_option_argument(p)


def _input_error(e: BaseException) -> str:
    """One line for an input the evaluation could not read: our own errors as they are (they name the sample,
    shard or repo), a library's with its type, which says what failed (``FileNotFoundError: ... PATH``)."""
    from ..train.errors import one_line

    msg = one_line(e)
    return msg if type(e).__module__.startswith("fusionrs_hf") else f"{type(e).__name__}: {msg}"


@contextlib.contextmanager
def _quiet_libraries(model: bool = True) -> Iterator[None]:
    """``--quiet``: no progress bar of ours, and none of transformers' ("Loading weights") or huggingface_hub's
    (downloads) either; their previous state is restored afterwards (the command may run inside a test or a
    notebook). A library that is not installed is skipped; transformers is imported for it only when a
    ``model`` is to be loaded (scoring ``--embeddings`` never imports it)."""
    import warnings

    undo = []
    with warnings.catch_warnings():  # huggingface_hub warns when HF_HUB_DISABLE_PROGRESS_BARS=0 overrides us
        warnings.simplefilter("ignore")
        try:
            from huggingface_hub.utils import (
                are_progress_bars_disabled,
                disable_progress_bars,
                enable_progress_bars,
            )

            if not are_progress_bars_disabled():
                disable_progress_bars()
                undo.append(enable_progress_bars)
        except ImportError:
            pass
        hf_logging = None
        if model:
            try:
                from transformers.utils import logging as hf_logging
            except ImportError:
                pass
        if hf_logging is not None and hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            undo.append(hf_logging.enable_progress_bar)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for restore in reversed(undo):
                restore()


def run(args: argparse.Namespace) -> int:
    from ..decode import DecodeError
    from ..errors import CliError
    from ..limits import ImageRefused
    from ..splits import MissingSplitError
    from . import ProtocolError, evaluate

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be >= 1, got {args.limit}")
    from ..storage import parse_storage_options

    try:
        options = parse_storage_options(args.storage_options)
    except ValueError as e:
        raise CliError(str(e)) from None
    from .embed import preprocessing

    if args.embeddings is not None and args.preprocess != "auto":
        raise CliError(f"--preprocess {args.preprocess} applies to --model (how images are embedded); "
                       "--embeddings are scored as they are")
    quiet = _quiet_libraries(args.model is not None) if args.quiet else contextlib.nullcontext()
    try:
        with quiet, preprocessing(args.preprocess):  # reaches the model's embedding pass (fusionrs_hf.eval.embed)
            res = evaluate(args.repo, model=args.model, embeddings=args.embeddings, config=args.config,
                           split=args.split, protocol=args.protocol, ties=args.ties, text_field=args.text_field,
                           zero_shot=not args.no_zero_shot, batch_size=args.batch_size, num_workers=args.num_workers,
                           precision=args.precision, device=args.device,
                           cache_dir=False if args.no_cache else args.cache_dir, limit=args.limit,
                           revision=args.revision, pretrained=args.pretrained,
                           progress=not args.quiet and sys.stderr.isatty(), save_embeddings=args.save_embeddings,
                           storage_options=options, text_key=args.text_key)
    except (ProtocolError, MissingSplitError) as e:
        raise CliError(str(e)) from None
    except BrokenPipeError:
        raise
    except (OSError, DecodeError, ImageRefused) as e:
        # a shard that is listed but gone (a 404), unreadable or corrupt, a store that stops answering, an image
        # that does not decode: unusable input, exit 2 (not 1, which says the evaluation itself failed)
        raise CliError(_input_error(e)) from None
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print(res.table())
    return 0
