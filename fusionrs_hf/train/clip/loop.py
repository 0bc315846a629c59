"""The run: train_clip (check, build, train, select, evaluate, save) and the final summary line."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from ...metrics import KS
from .config import SETTINGS, ClipTrainConfig, resolve_config
from .data import make_loader, read_captions
from .ddp import Dist, NoLog, weights_digest
from .errors import PresetError
from .models import ClipAdapter, build_model
from .optim import Training, default_lr
from .recipes import get_recipe


def train_clip(cfg: ClipTrainConfig, *, model: ClipAdapter | None = None,
               log_fn: Callable[[dict], None] | None = None) -> dict:
    """Train, evaluate on ``cfg.eval_split`` and save a checkpoint under ``cfg.out``.

    Returns ``{"metrics": ..., "result": EvalResult, "line": ..., "history": [...], "checkpoint":
    path, "eval_config": ..., "settings": ..., "overrides": [...], "selection": [...], "selected": {...},
    "candidates": [...], ...}``; the history holds one record per logged step (``step``, ``loss``, each
    term, ``logit_scale``, ``lr``). ``line`` is :meth:`fusionrs_hf.eval.EvalResult.line` of the final
    evaluation. ``selection`` holds one record per checkpoint-selection point (``best-val-recall``: the
    validation Mean R; ``release``: the validation loss and its terms), ``selected`` what was kept
    (``release``: ``checkpoint`` ``best`` or ``latest``, its epoch, step, validation loss and Mean R) and
    ``candidates`` (``release``) the two weights compared by validation Mean R.

    Several processes (torchrun's ``WORLD_SIZE > 1``, or an initialised process group of several; call it
    on every rank): data-parallel, see :mod:`fusionrs_hf.train.clip.ddp`. Each rank reads its share of the
    train rows, ``batch_size`` rows per step (per process: the loss sees ``world_size x batch_size`` rows,
    gathered with gradients); rank 0 alone evaluates, saves and writes ``train_log.jsonl`` / ``metrics.json``
    (which then also holds ``distributed``: world size, backend, batch sizes, each rank's weights digest); every
    rank returns the run's metrics, line, selection and checkpoint path (rank 0's), with ``rank`` and
    ``world_size`` (``distributed`` as in ``metrics.json``, None in one process); ``log_fn`` is called on rank 0
    only. An error before training, on any rank, stops every rank (see :mod:`~fusionrs_hf.train.clip.ddp`).

    Settings: :func:`resolve_config` (a bad preset/option combination raises :class:`PresetError`
    before anything is read). Missing splits (checked from the shard listing before anything is
    built or trained): the data config must have a train split. Evaluation runs on
    ``cfg.eval_config`` when given (it must have ``eval_split``); otherwise on the data config, or,
    when that has no ``eval_split`` (rc4's ``iraware`` is train only), on ``default`` of the same
    split, said in one stderr line and returned as ``eval_config``. ``select="best-val-recall"`` and
    ``select="release"`` need a validation split the same way (``release`` also for its validation
    loss, over every validation row of the data config with a usable caption, not only the evaluation
    representatives). An evaluation protocol the rows cannot follow (``rc4`` on rows without release
    flags) raises :class:`fusionrs_hf.eval.ProtocolError` before training. ``preprocess="processor"``
    with a model that has no transformers image processor (open_clip) raises :class:`PresetError` before
    training. Any other miss raises :class:`fusionrs_hf.splits.MissingSplitError`, as does
    ``eval_text="ir_caption"`` on an eval split without IR-aware captions.
    """
    from .ddp import setup

    ddp = setup(cfg.device)  # one process, or this rank of several (the process group started if need be)
    try:
        run = _train(cfg, ddp, model, log_fn)
    except BaseException:
        if ddp.failed_together:  # every rank stops here: no collective is pending, the group can go
            ddp.close()
        raise  # otherwise another rank may still be in a collective: leave the group to the process's exit
    ddp.close()
    return run


def _train(cfg: ClipTrainConfig, ddp: Dist, model: ClipAdapter | None,
           log_fn: Callable[[dict], None] | None) -> dict:
    from ...eval import DEFAULT_BATCH_SIZE, check_ties, evaluate_model, read_eval_rows, select
    from ...splits import MissingSplitError, repo_splits
    from ...storage import public_options

    main = ddp.main
    quiet = None if main else io.StringIO()  # the other ranks keep the fallback line to themselves
    # every rank runs these checks on the same listing and rows; the ranks then agree: all go on or all stop
    # (twice: after the checks, before anything is built, and after building the model and the loaders)
    with ddp.agreed():
        cfg, overrides = resolve_config(cfg)
        recipe = get_recipe(cfg.recipe)
        config = cfg.config or recipe.config
        so = cfg.storage_options
        listing = repo_splits(cfg.data, storage_options=so)
        listing.require(config, "train", who="train_clip")
        eval_config = listing.eval_config(cfg.eval_config or config, cfg.eval_split,
                                          explicit=cfg.eval_config is not None, who="train_clip", stream=quiet)
        select_config = val_config = None
        if cfg.select in ("best-val-recall", "release"):
            select_config = (eval_config if cfg.eval_split == "validation" else
                             listing.eval_config(cfg.eval_config or config, "validation",
                                                 explicit=cfg.eval_config is not None, who="train_clip",
                                                 stream=quiet))
        if cfg.select == "release":  # the release's validation loss: the training data's own validation rows
            val_config = config if listing.has(config, "validation") else select_config
        if cfg.eval_text == "ir_caption" and not listing.has_ir_captions(eval_config, cfg.eval_split):
            raise MissingSplitError(
                f"train_clip: eval_text 'ir_caption' needs IR-aware captions, but no row of {eval_config!r}/"
                f"{cfg.eval_split} in {cfg.data} has one (config 'iraware' has: {', '.join(listing.splits('iraware')) or 'no split'})",
                repo=cfg.data, config=eval_config, split=cfg.eval_split, available=listing.splits("iraware"))
        # the eval rows are read before anything is built (a protocol they cannot follow fails now)
        eval_rows = read_eval_rows(cfg.data, eval_config, cfg.eval_split, storage_options=so)
        select_rows = None
        if select_config is not None:
            select_rows = (eval_rows if (select_config, "validation") == (eval_config, cfg.eval_split)
                           else read_eval_rows(cfg.data, select_config, "validation", storage_options=so))
        check_ties(cfg.eval_ties)
        for rows in (eval_rows, select_rows):  # a protocol these rows cannot follow fails now, not after training
            if rows is not None:
                select(rows, cfg.eval_protocol, cfg.eval_text)
    pinned = {}
    if ddp.active:  # every rank's loaders read the Hub commit rank 0 sees (None: a local folder or another store)
        from ...torch import agree_on_commit

        commit = agree_on_commit(cfg.data, storage_options=so)
        pinned = {"revision": commit} if commit is not None else {}
    with ddp.agreed():
        if overrides and main:
            print(f"train_clip: --preset {cfg.preset} with {'; '.join(overrides)}", file=sys.stderr, flush=True)
        torch.manual_seed(cfg.seed)
        if model is None:
            texts = read_captions(cfg.data, config, storage_options=so) if cfg.model == "tiny" else None
            model = build_model(cfg.model, texts=texts, image_size=cfg.image_size, pretrained=cfg.pretrained,
                                seed=cfg.seed)
        image_processor = None
        if cfg.preprocess == "processor":
            image_processor = getattr(model, "image_processor", None)
            if image_processor is None:
                raise PresetError(f"train_clip: preprocess 'processor' (the release's CLIPProcessor pixels) needs a "
                                  f"transformers CLIP model with an image processor; {cfg.model!r} ({model.kind}) "
                                  "has none (choose a transformers CLIP model, or drop --preset for our pixels)")
        model.preprocess = cfg.preprocess  # every evaluation below and the saved checkpoint use these pixels
        device = ddp.device if ddp.active else torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.to(device).train()
        lr = cfg.lr if cfg.lr is not None else default_lr(cfg.model)

        global_order = cfg.shuffle == "global"
        pixels = dict(image_size=model.image_size, mean=model.mean, std=model.std, image_processor=image_processor,
                      num_workers=cfg.num_workers, storage_options=so, **pinned)
        # each rank its share of the train rows (make_dataloader reads the process group), equal batch counts
        train_loader = make_loader(cfg.data, config, "train", batch_size=cfg.batch_size,
                                   shuffle="global" if global_order else True, seed=cfg.seed, drop_last=True,
                                   usable_captions_only=global_order, **pixels)
        if len(train_loader) == 0:  # drop_last, as the release: a split smaller than one batch trains nothing
            from ...secrets import scrub

            raise PresetError(scrub(f"train_clip: config {config!r} of {cfg.data} has fewer train rows than one "
                                    f"batch of {cfg.batch_size} per process (whole batches only, as the release; with "
                                    "several processes each reads its share); lower --batch-size"))
        val_loader = val_ids = None
        if val_config is not None:  # the release's val_loader: dataset order, batch 128, drop_last False
            whole = {"rank": 0, "world_size": 1} if ddp.active else {}  # the one-process batches, dealt below
            val_loader = make_loader(cfg.data, val_config, "validation",
                                     batch_size=cfg.val_batch_size or cfg.batch_size, shuffle=False, map_style=True,
                                     seed=cfg.seed, drop_last=False, usable_captions_only=True, **pixels, **whole)
            if ddp.active:
                val_loader, val_ids = ddp.share_batches(val_loader)
        total = cfg.steps if cfg.steps is not None else max(1, cfg.epochs * len(train_loader))
    ddp.same("the train batches per epoch and the steps", (len(train_loader), total))
    eval_kw = dict(protocol=cfg.eval_protocol, ties=cfg.eval_ties, text_field=cfg.eval_text,
                   batch_size=cfg.eval_batch_size or DEFAULT_BATCH_SIZE, num_workers=cfg.num_workers,
                   precision=cfg.eval_precision, limit=cfg.eval_limit, storage_options=so)

    def run_eval(rows, conf: str, split: str, ties: str | None = None, text_key: str | None = None):
        """Rank 0 evaluates (the whole split: evaluate_model reads it in one process); every rank gets the result."""
        over = {**({"ties": ties} if ties else {}), **({"text_key": text_key} if text_key else {})}
        return ddp.on_main(lambda: evaluate_model(model, cfg.data, config=conf, split=split, rows=rows,
                                                  **{**eval_kw, **over}))

    # the release's selection is eval_clip_retrieval.py's: torch.topk (ties in gallery order) and texts grouped by
    # " ".join(text.lower().split()) (its --multi-positive-text key), not the rc4 scorer's normalized_caption_key
    select_ties = "topk" if cfg.select == "release" else None
    select_key = "lowercase" if cfg.select == "release" else None

    if ddp.active and main:
        print(f"train_clip: {ddp.world} processes ({ddp.backend}, {device.type}): global batch {ddp.world} x "
              f"{cfg.batch_size} = {ddp.world * cfg.batch_size} rows per step (--batch-size is per process)"
              + (f"; the release trained with batch 128 in one process (--batch-size {128 // ddp.world} matches it)"
                 if cfg.preset == "rc4-release" and ddp.world * cfg.batch_size != 128 and 128 % ddp.world == 0
                 else ""), file=sys.stderr, flush=True)
    training = Training(cfg, model, total, lr=lr, device=device, dist=ddp)
    out = Path(cfg.out)
    history: list[dict] = []
    selection: list[dict] = []
    candidates: list[dict] = []
    best: dict = {}
    log_path = out / "train_log.jsonl"

    def open_log():
        out.mkdir(parents=True, exist_ok=True)
        return log_path.open("w")

    log_file = ddp.on_main(open_log, send=False) or NoLog()  # rank 0 writes the log; the others nothing
    emit = (log_fn or (lambda rec: print(json.dumps(rec), file=sys.stderr))) if main else (lambda rec: None)

    def cpu_state() -> dict:
        # a copy off the accelerator: at most two (best and latest) are held at once, in host memory
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def note(rec: dict) -> None:
        selection.append(rec)
        log_file.write(json.dumps({"step": step, "select": rec}) + "\n")
        emit({"step": step, "select": rec})

    def consider(epoch_done: int) -> None:
        """best-val-recall: Mean R on validation; the first best (strictly greater) wins."""
        res = run_eval(select_rows, select_config, "validation")
        note({"step": step, "epoch": epoch_done, "select_mean_r": res.metrics["mean_r"]})
        if not best or res.metrics["mean_r"] > best["mean_r"]:
            best.update(mean_r=res.metrics["mean_r"], step=step, epoch=epoch_done, result=res, state=cpu_state())

    def validate(epoch_done: int) -> None:
        """release: the validation loss after an epoch; ``best`` is the strictly lowest so far (the
        release saves latest.pt every epoch and best.pt when ``val_loss < best``)."""
        # several processes: each rank its share of the one-process batches, gathered
        v = training.val_loss(val_loader) if val_ids is None else training.val_loss(val_loader, batch_ids=val_ids)
        note({"step": step, "epoch": epoch_done, "val_loss": v["loss"], "val_components": v["components"],
              "val_batches": v["batches"]})
        if not best or v["loss"] < best["val_loss"]:
            best.update(val_loss=v["loss"], step=step, epoch=epoch_done, state=cpu_state())

    epoch_end = {"best-val-recall": consider, "release": validate}.get(cfg.select)
    step, epoch, t0 = 0, 0, time.time()
    while step < total:
        got_batch = False
        train_loader.set_epoch(epoch)
        for batch in ddp.batches(train_loader):  # several processes: fetched in step (an error stops every rank)
            got_batch = True
            loss, parts = training.step(batch)
            step += 1
            if step == 1 or step % max(1, cfg.log_every) == 0 or step == total:
                rec = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **parts,
                       "logit_scale": float(model.logit_scale.detach().exp()),
                       "lr": training.scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2)}
                history.append(rec)
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                emit(rec)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                rec = {"step": step, "eval": run_eval(eval_rows, eval_config, cfg.eval_split).line()}
                log_file.write(json.dumps(rec) + "\n")
                emit(rec)
            if step >= total:
                break
        else:
            if got_batch and epoch_end is not None and step < total:
                epoch_end(epoch + 1)  # an epoch ended before the last step
        if not got_batch:
            from ..errors import NoTrainingDataError

            raise NoTrainingDataError(f"{cfg.data}: config {config!r} train split gave no full batch of "
                                      f"{cfg.batch_size}")
        epoch += 1

    result = None
    selected = {"step": step, "epoch": epoch}
    if cfg.select == "best-val-recall":
        consider(epoch)
        selected = {"step": best["step"], "epoch": best["epoch"], "select_mean_r": best["mean_r"]}
        if best["step"] != step:
            ddp.on_main(lambda: model.save(out / "last_checkpoint"), send=False)
            model.load_state_dict(best["state"])
        if (select_config, "validation") == (eval_config, cfg.eval_split):
            result = best["result"]  # the same weights, rows and code: no second pass
    elif cfg.select == "release":
        validate(epoch)
        latest = {"name": "latest", "step": step, "epoch": epoch, "val_loss": selection[-1]["val_loss"]}
        first = {"name": "best", "step": best["step"], "epoch": best["epoch"], "val_loss": best["val_loss"]}
        if best["step"] == step:  # best is latest: one set of weights, one evaluation (a tie keeps best)
            res_best = res_latest = run_eval(select_rows, select_config, "validation", select_ties, select_key)
            winner = "best"
        else:  # eval_clip_retrieval.py: candidates [best, latest], a strictly higher Mean R replaces best
            res_latest = run_eval(select_rows, select_config, "validation", select_ties, select_key)
            latest_state = cpu_state()
            model.load_state_dict(best["state"])
            res_best = run_eval(select_rows, select_config, "validation", select_ties, select_key)
            winner = "latest" if res_latest.metrics["mean_r"] > res_best.metrics["mean_r"] else "best"
            model.load_state_dict(latest_state)
            if winner == "best":
                ddp.on_main(lambda: model.save(out / "last_checkpoint"), send=False)
                model.load_state_dict(best["state"])
            del latest_state
        candidates = [{**first, "mean_r": res_best.metrics["mean_r"]}, {**latest, "mean_r": res_latest.metrics["mean_r"]}]
        chosen = candidates[0] if winner == "best" else candidates[1]
        selected = {"checkpoint": winner, "step": chosen["step"], "epoch": chosen["epoch"],
                    "val_loss": chosen["val_loss"], "select_mean_r": chosen["mean_r"]}
        selected["select_ties"], selected["select_text_key"] = select_ties, select_key
        rec = {"step": step, "candidates": candidates, "selected": winner, "ties": select_ties,
               "text_key": select_key}
        log_file.write(json.dumps({"step": step, "select": rec}) + "\n")
        emit({"step": step, "select": rec})
        # (the final figures are scored anew: they use the rc4 scorer's key, which the selection does not)
    best.pop("state", None)
    if result is None:
        result = run_eval(eval_rows, eval_config, cfg.eval_split)
    line = result.line()
    settings = {name: getattr(cfg, name) for name in SETTINGS}
    val_losses = [{"epoch": r["epoch"], "step": r["step"], "val_loss": r["val_loss"]} for r in selection
                  if "val_loss" in r]
    distributed = None
    if ddp.active:  # each rank's final weights: equal in a sound run (DDP keeps them so), recorded to show it
        digests = ddp.objects(weights_digest(model))
        distributed = {"world_size": ddp.world, "backend": ddp.backend, "device": device.type,
                       "batch_size_per_process": cfg.batch_size, "global_batch_size": ddp.world * cfg.batch_size,
                       "weights_sha256": digests, "weights_equal": len(set(digests)) == 1}
        if main and not distributed["weights_equal"]:
            print(f"train_clip: warning: the {ddp.world} processes ended with different weights (digests "
                  f"{', '.join(d[:12] for d in digests)}); the checkpoint holds rank 0's", file=sys.stderr, flush=True)

    def ran_as() -> dict:
        """What the run did, beside what it was asked (config, settings): a preset's fp16 is fp32 off CUDA, and
        --steps, not --epochs, bounds the passes when given."""
        dtype = training.amp_dtype
        per_epoch = len(train_loader)
        return {"device": training.device.type,
                "precision": {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype)),
                "loss_scaling": bool(training.scaler.is_enabled()),
                "batches_per_epoch": per_epoch, "epochs": round(step / per_epoch, 4) if per_epoch else None}

    def finish() -> str:
        log_file.write(json.dumps({"step": step, "eval": line}) + "\n")
        log_file.close()
        ckpt = model.save(out / "checkpoint")
        run = {"config": {**asdict(cfg), "storage_options": public_options(so)}, "preset": cfg.preset, "settings": settings, "overrides": overrides,
               "recipe": recipe.name, "data_config": config, "eval_config": eval_config, "eval_split": cfg.eval_split,
               "lr": lr, "steps": step, "selected": selected, "selection": selection, "candidates": candidates,
               "val_losses": val_losses, "metrics": result.metrics, "line": line, "eval": result.to_dict(),
               "ran": ran_as()}
        if distributed is not None:
            run["distributed"] = distributed
        from ...atomic import atomic_write
        from ...secrets import scrub

        # whole or not at all, and no credential of a repo URL (config.data, eval.repo)
        atomic_write(out / "metrics.json", scrub(json.dumps(run, indent=2, default=str)))
        return str(ckpt)

    ckpt = ddp.on_main(finish)  # rank 0 saves; every rank gets the checkpoint's path (or rank 0's error)
    return {"metrics": result.metrics, "result": result, "line": line, "history": history, "checkpoint": ckpt,
            "recipe": recipe.name, "data_config": config, "eval_config": eval_config, "eval_split": cfg.eval_split,
            "steps": step, "settings": settings, "overrides": overrides, "selection": selection,
            "selected": selected, "candidates": candidates, "val_losses": val_losses, "model": model,
            "training": training, "rank": ddp.rank, "world_size": ddp.world, "distributed": distributed}


def final_line(metrics, ks: Sequence[int] = KS) -> dict[str, float]:
    """The one-line JSON summary the command line prints (an ``EvalResult``'s :meth:`line`, or the
    R@K, means and counts of a flat metrics dict)."""
    if hasattr(metrics, "line"):
        return metrics.line(ks)
    keep = [k for k in metrics if k.endswith(tuple(f"_r{x}" for x in ks))]
    keep += [k for k in ("mean_r", "text_mean", "pair_mean", "mean_r_all6", "chance_r1", "n_images", "n_texts")
             if k in metrics]
    return {k: round(float(metrics[k]), 4) for k in keep}
