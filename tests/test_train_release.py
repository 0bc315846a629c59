"""The rc4-release CLIP run, read back: the global shuffle (map-style loader), the processor's pixels in
training and in ``fusionrs eval``, and the release's checkpoint selection (validation loss, then [best,
latest] by validation Mean R). Tiny repos and a tiny random CLIP; nothing is downloaded."""

from __future__ import annotations

import collections
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

from fusionrs_hf.torch import FusionRSMapDataLoader, make_dataloader  # noqa: E402
from fusionrs_hf.torch.mapstyle import FastPixels, ProcessorPixels, make_map_dataloader  # noqa: E402
from fusionrs_hf.train import clip  # noqa: E402

COUNTS = {"train": 8, "validation": 4, "test": 2}
"""40 train rows in 5 sources x several shards of 4 rows; 20 validation rows."""
N_TRAIN = 5 * COUNTS["train"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("release") / "repo", counts=COUNTS, size=48, max_rows=4)


@pytest.fixture(scope="module")
def tiny(repo):
    return clip.tiny_clip(clip.read_captions(str(repo), "default"), image_size=32)


def _epoch_ids(loader, epoch: int | None = None) -> list[str]:
    if epoch is not None:
        loader.set_epoch(epoch)
    return [s for b in loader for s in b["sample_id"]]


# ------------------------------------------------------------------------ global shuffle


def test_global_shuffle_is_the_release_loaders_permutation(repo):
    from fusionrs_hf import load

    bs, seed = 8, 42
    loader = make_dataloader(repo, config="default", split="train", batch_size=bs, shuffle="global", seed=seed,
                             drop_last=True, image_size=32)
    assert isinstance(loader, FusionRSMapDataLoader) and len(loader) == N_TRAIN // bs
    ids = loader.dataset.sample_ids
    assert ids == list(load("default", "train", repo=str(repo))["sample_id"])  # the Arrow dataset's order
    # the release's construction, over indices: DataLoader(shuffle=True, drop_last=True, generator=seeded)
    ref = DataLoader(range(len(ids)), batch_size=bs, shuffle=True, drop_last=True,
                     generator=torch.Generator().manual_seed(seed))
    want = [[ids[i] for b in ref for i in b.tolist()] for _ in range(3)]
    got = [_epoch_ids(loader, e) for e in range(3)]
    assert got == want
    # epoch 0 is torch.randperm(n) of the seeded generator (after the one draw torch makes for worker seeds)
    g = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=g)
    assert got[0] == [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
    for order in got:  # every row at most once, all but the n % bs of the dropped last batch
        assert len(order) == len(set(order)) == N_TRAIN - N_TRAIN % bs
    assert len({tuple(o) for o in got}) == 3  # a new order each epoch
    # batches mix sources (the streaming reader's batches hold one or two shards of one source)
    batches = [b["source"] for b in make_dataloader(repo, config="default", split="train", batch_size=bs,
                                                    shuffle="global", seed=seed, image_size=32)]
    assert all(len(set(s)) >= 3 for s in batches), batches
    # same seed: same orders; set_epoch(2) on a fresh loader replays the generator to epoch 2
    again = make_dataloader(repo, config="default", split="train", batch_size=bs, shuffle="global", seed=seed,
                            drop_last=True, image_size=32)
    assert _epoch_ids(again, 2) == got[2] and _epoch_ids(again, 0) == got[0]
    next(iter(again))  # a pass broken off (epoch 1): the next one replays instead of continuing from there
    assert _epoch_ids(again, 1) == got[1] and _epoch_ids(again) == got[2]
    other = make_dataloader(repo, config="default", split="train", batch_size=bs, shuffle="global", seed=seed + 1,
                            drop_last=True, image_size=32)
    assert _epoch_ids(other, 0) != got[0]


def test_global_shuffle_without_drop_last_reads_every_row_once_and_ddp_splits_it(repo):
    loader = make_dataloader(repo, config="default", split="train", batch_size=7, shuffle="global", seed=3,
                             image_size=32)
    ids = loader.dataset.sample_ids
    for e in range(2):
        order = _epoch_ids(loader, e)
        assert sorted(order) == sorted(ids) and len(order) == len(ids)
    ranks = [make_dataloader(repo, config="default", split="train", batch_size=4, shuffle="global", seed=3,
                             image_size=32, rank=r, world_size=2) for r in range(2)]
    for e in range(2):
        parts = [_epoch_ids(r, e) for r in ranks]
        assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(ids)
        s = DistributedSampler(range(len(ids)), num_replicas=2, rank=0, shuffle=True, seed=3, drop_last=True)
        s.set_epoch(e)
        assert parts[0] == [ids[i] for i in s]
    assert _epoch_ids(ranks[0], 0) != _epoch_ids(ranks[0], 1)
    # an odd row count: each rank N // 2 rows, none on both (torch's sampler would pad with a repeated row)
    odd = [make_dataloader(repo, config="default", split="validation", batch_size=4, shuffle="global", seed=3,
                           image_size=32, rank=r, world_size=3) for r in range(3)]
    n = len(odd[0].dataset)
    parts = [_epoch_ids(r, 0) for r in odd]
    assert n % 3 and all(len(p) == n // 3 for p in parts) and len(set().union(*parts)) == 3 * (n // 3)


def test_map_style_batches_keep_the_streaming_format_and_values(repo):
    stream = next(iter(make_dataloader(repo, config="default", split="validation", batch_size=20, image_size=32)))
    mapped = next(iter(make_dataloader(repo, config="default", split="validation", batch_size=20, image_size=32,
                                       map_style=True)))
    assert set(mapped) == set(stream) and mapped["sample_id"] == stream["sample_id"]
    for key in ("rgb", "ir"):
        assert mapped[key].dtype == torch.float32 and mapped[key].shape == (20, 3, 32, 32)
        assert mapped[key].is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(mapped[key], stream[key])
    for key in ("caption", "ir_caption", "source"):
        assert mapped[key] == stream[key]
    raw = next(iter(make_dataloader(repo, config="default", split="validation", batch_size=4, image_size=32,
                                    map_style=True, normalize=False)))
    assert raw["rgb"].dtype == torch.uint8


def test_rows_without_a_usable_caption_are_left_out_in_order(repo):
    from fusionrs_hf import load

    ds = load("default", "train", repo=str(repo))
    caps = list(ds["caption"])
    caps[3], caps[10] = "", " !? "  # nothing left after the authors' normalisation
    ds = ds.remove_columns("caption").add_column("caption", caps)
    loader = make_map_dataloader(ds, batch_size=4, shuffle=False, usable_captions_only=True, image_size=32)
    ids = list(ds["sample_id"])
    assert loader.dataset.dropped == 2 and len(loader.dataset) == N_TRAIN - 2
    assert _epoch_ids(loader) == [s for i, s in enumerate(ids) if i not in (3, 10)]


# ------------------------------------------------------------------------ processor pixels


def _jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_processor_pixels_are_the_clip_processors_on_fully_decoded_images(tiny):
    proc = tiny.image_processor
    assert "Pil" in type(proc).__name__ or not type(proc).__name__.endswith("Fast")  # the PIL backend
    data = [_jpeg(80, 48, 0), _jpeg(48, 64, 1)]  # not square: the crop matters
    got = ProcessorPixels(proc, channels_last=False).stack([ProcessorPixels(proc).decode(d) for d in data])
    want = proc(images=[Image.open(io.BytesIO(d)).convert("RGB") for d in data], return_tensors="pt")["pixel_values"]
    assert torch.equal(got, want.float())
    # ... which is CLIP's recipe: shortest edge to 32 bicubic (PIL, on the 8-bit image), centre crop 32,
    # /255, OpenAI mean/std
    for d, row in zip(data, got, strict=True):
        im = Image.open(io.BytesIO(d)).convert("RGB")
        w, h = im.size
        short, long = min(w, h), max(w, h)
        size = (32, int(32 * long / short))  # the long side truncated, as transformers computes it
        im = im.resize(size if w <= h else size[::-1], Image.BICUBIC)
        left, top = (im.width - 32) // 2, (im.height - 32) // 2
        arr = np.asarray(im.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255.0
        ref = (arr - np.asarray(clip.CLIP_MEAN, np.float32)) / np.asarray(clip.CLIP_STD, np.float32)
        assert np.allclose(row.numpy().transpose(1, 2, 0), ref, atol=1e-5)
    # and not our fast path (reduced-scale decode, bilinear) on the same bytes
    ours = FastPixels(32, channels_last=False)
    assert not torch.allclose(ours.stack([ours.decode(d) for d in data]), got, atol=1e-3)


def test_loaders_with_an_image_processor_give_its_pixels_on_both_paths(repo, tiny):
    import pyarrow.parquet as pq

    proc = tiny.image_processor
    rows = {}
    for f in sorted(Path(repo, "data").glob("*/validation/*.parquet")):
        for r in pq.read_table(f, columns=["sample_id", "rgb", "ir"]).to_pylist():
            rows[r["sample_id"]] = r
    for kw in ({}, {"map_style": True}):
        batch = next(iter(make_dataloader(repo, config="default", split="validation", batch_size=5,
                                          image_processor=proc, **kw)))
        for key in ("rgb", "ir"):
            want = proc(images=[Image.open(io.BytesIO(rows[s][key]["bytes"])).convert("RGB")
                                for s in batch["sample_id"]], return_tensors="pt")["pixel_values"]
            assert torch.equal(batch[key], want.float()), kw
    with pytest.raises(ValueError, match="normalizes itself"):
        make_dataloader(repo, config="default", split="validation", image_processor=proc, normalize=False)


# ------------------------------------------------------------------------ fusionrs eval with the processor


def _fusionrs(*argv: str) -> tuple[int, str, str]:
    from fusionrs_hf import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def test_fusionrs_eval_embeds_a_released_style_model_with_its_processor(repo, tiny, tmp_path):
    from fusionrs_hf.eval import embed

    # a transformers CLIP folder as the release ships one: model, tokenizer, preprocessor_config.json
    folder = tmp_path / "released"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    tiny.image_processor.save_pretrained(folder)
    assert clip.default_preprocess(str(folder)) == "processor"
    assert clip.default_preprocess("openai/clip-vit-base-patch32") == "processor"
    assert clip.default_preprocess("ViT-B-32:openai") == "fast"
    old = tmp_path / "old_ckpt"  # a train_clip checkpoint from before the choice was recorded
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "fusionrs_clip.json").write_text(json.dumps({"kind": "transformers"}))
    assert clip.default_preprocess(str(old)) == "fast"

    def run(*extra):
        rc, out, err = _fusionrs("eval", str(repo), "--model", str(folder), "--config", "default", "--split",
                                 "validation", "--json", "--no-cache", "--quiet", "--no-zero-shot",
                                 "--save-embeddings", str(tmp_path / f"e{len(extra)}.npz"), *extra)
        assert rc == 0, err
        return json.loads(out), embed.load_embeddings(tmp_path / f"e{len(extra)}.npz")

    res, emb = run()
    assert res["source"]["preprocess"] == "processor"
    # the embedding of a row is the model's on the processor's pixels of the fully decoded images
    import pyarrow.parquet as pq

    f = sorted(Path(repo, "data").glob("*/validation/*.parquet"))[0]
    row = pq.read_table(f, columns=["sample_id", "rgb"]).to_pylist()[0]
    model = clip.hf_clip(str(folder)).eval()
    assert model.preprocess == "processor"
    pix = model.image_processor(images=[Image.open(io.BytesIO(row["rgb"]["bytes"])).convert("RGB")],
                                return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = model.encode_image(pix)[0].numpy()
    got = emb.rgb[emb.sample_id.index(row["sample_id"])]
    assert np.allclose(got, want / np.linalg.norm(want), atol=1e-5)
    fast_res, fast_emb = run("--preprocess", "fast")
    assert fast_res["source"]["preprocess"] == "fast" and not np.allclose(fast_emb.rgb, emb.rgb, atol=1e-3)
    # the choice is part of the cache key: a cached fast pass is not served for the processor's
    cache = tmp_path / "cache"
    for choice, state in (("fast", "written"), ("auto", "written"), ("processor", "hit")):
        rc, out, err = _fusionrs("eval", str(repo), "--model", str(folder), "--config", "default", "--split",
                                 "validation", "--json", "--cache-dir", str(cache), "--quiet", "--no-zero-shot",
                                 "--preprocess", choice)
        assert rc == 0, err
        assert json.loads(out)["source"]["cache"] == state, choice


# ------------------------------------------------------------------------ the release's checkpoint selection


def _release_run(repo, tmp_path, monkeypatch, losses, mean_rs, **kw):
    """A tiny rc4-release run of 3 epochs whose validation losses and candidate Mean Rs are scripted;
    returns the run, the weights at each epoch end, the loaders it asked for and the validation evals."""
    from fusionrs_hf import eval as fusionrs_eval

    states, loaders, evals = [], [], []
    real_val_loss = clip.Training.val_loss

    def val_loss(self, loader):
        real = real_val_loss(self, loader)  # the real pass runs (and must work), its value is scripted
        states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return {**real, "loss": losses[len(states) - 1]}

    real_eval = fusionrs_eval.evaluate_model

    def evaluate_model(model, repo_, **ekw):
        res = real_eval(model, repo_, **ekw)
        if ekw["split"] == "validation":
            # the release's selection is eval_clip_retrieval.py's: torch.topk, lowercase-whitespace text key
            assert ekw["ties"] == "topk" and ekw["text_key"] == "lowercase"
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            epoch = next(i + 1 for i, s in enumerate(states) if all(torch.equal(s[k], weights[k]) for k in s))
            evals.append(epoch)
            res.metrics = {**res.metrics, "mean_r": mean_rs[epoch]}
        return res

    real_make_loader = clip.make_loader

    def make_loader(*a, **lk):
        loaders.append((a[1], a[2], lk))
        return real_make_loader(*a, **lk)

    monkeypatch.setattr(clip.Training, "val_loss", val_loss)
    monkeypatch.setattr(fusionrs_eval, "evaluate_model", evaluate_model)
    monkeypatch.setattr(clip.loop, "make_loader", make_loader)  # where train_clip looks it up
    cfg = clip.ClipTrainConfig(data=str(repo), preset="rc4-release", config="default", model="tiny", image_size=32,
                               epochs=3, batch_size=8, val_batch_size=8, eval_split="test", out=str(tmp_path / "run"),
                               device="cpu", **kw)
    run = clip.train_clip(cfg, log_fn=lambda r: None)
    return run, states, loaders, evals


def _saved(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _same(saved: dict, state: dict) -> bool:
    return all(torch.equal(saved[k], state[f"model.{k}"]) for k in saved)


@pytest.mark.parametrize("losses, mean_rs, winner, epoch, evaluated", [
    ([0.5, 0.3, 0.4], {2: 0.2, 3: 0.2}, "best", 2, [3, 2]),    # a tie keeps best
    ([0.5, 0.3, 0.4], {2: 0.2, 3: 0.3}, "latest", 3, [3, 2]),  # strictly higher Mean R: latest
    ([0.5, 0.5, 0.6], {1: 0.4, 3: 0.1}, "best", 1, [3, 1]),    # an equal loss is no new best
    ([0.5, 0.4, 0.3], {3: 0.1}, "best", 3, [3]),               # best is latest: one evaluation
])
def test_release_selection_keeps_best_by_val_loss_or_latest_by_mean_r(repo, tmp_path, monkeypatch, losses, mean_rs,
                                                                      winner, epoch, evaluated):
    run, states, loaders, evals = _release_run(repo, tmp_path, monkeypatch, losses, mean_rs)
    steps_per_epoch = N_TRAIN // 8
    assert evals == evaluated
    assert [r["epoch"] for r in run["selection"]] == [1, 2, 3] and [r["val_loss"] for r in run["selection"]] == losses
    assert run["val_losses"] == [{"epoch": e, "step": e * steps_per_epoch, "val_loss": v}
                                 for e, v in enumerate(losses, 1)]
    best_epoch = 1 + min(range(3), key=lambda i: (losses[i], i))
    assert [c["name"] for c in run["candidates"]] == ["best", "latest"]
    assert [c["epoch"] for c in run["candidates"]] == [best_epoch, 3]
    assert run["selected"] == {"checkpoint": winner, "epoch": epoch, "step": epoch * steps_per_epoch,
                               "val_loss": losses[epoch - 1], "select_mean_r": mean_rs[epoch], "select_ties": "topk",
                               "select_text_key": "lowercase"}
    out = tmp_path / "run"
    assert _same(_saved(out / "checkpoint"), states[epoch - 1])
    assert (out / "last_checkpoint").exists() == (epoch != 3)
    if epoch != 3:
        assert _same(_saved(out / "last_checkpoint"), states[2])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["selected"] == run["selected"] and saved["candidates"] == run["candidates"]
    assert saved["settings"]["select"] == "release"
    # the loaders: train = global shuffle with the processor's pixels, rows with usable captions;
    # validation loss = map-style, dataset order, the last batch kept, batch val_batch_size
    (tc, ts, tk), (vc, vs, vk) = loaders
    assert (tc, ts, tk["shuffle"], tk["drop_last"], tk["usable_captions_only"]) == ("default", "train", "global",
                                                                                     True, True)
    assert (vc, vs, vk["shuffle"], vk["map_style"], vk["drop_last"], vk["batch_size"]) == (
        "default", "validation", False, True, False, 8)
    assert tk["image_processor"] is not None and vk["image_processor"] is tk["image_processor"]
    meta = json.loads((out / "checkpoint" / "fusionrs_clip.json").read_text())
    assert meta["preprocess"] == "processor" and (out / "checkpoint" / "preprocessor_config.json").is_file()


def test_release_val_loss_is_the_mean_over_batches_of_the_combined_loss(repo, tiny):
    cfg, _ = clip.resolve_config(clip.ClipTrainConfig(data=str(repo), preset="rc4-release"))
    tr = clip.Training(cfg, tiny, 10, lr=cfg.lr, device=torch.device("cpu"))
    n = 5 * COUNTS["validation"]
    loader = clip.make_loader(str(repo), "default", "validation", batch_size=n - 1, image_size=tiny.image_size,
                              mean=tiny.mean, std=tiny.std, shuffle=False, map_style=True,
                              image_processor=tiny.image_processor, usable_captions_only=True)
    tiny.train()
    got = tr.val_loss(loader)
    assert tiny.training and got["batches"] == 2  # n - 1 rows, then one: it counts, with loss 0
    first = next(iter(loader))
    with torch.no_grad():
        tiny.eval()
        emb = {"rgb": tiny.encode_image(first["rgb"]), "ir": tiny.encode_image(first["ir"]),
               "caption": tiny.encode_text(first["caption"])}
        tiny.train()
        want = sum(clip.info_nce(emb[a], emb[b], tiny.logit_scale, clamp=False)
                   for a, b in clip.get_recipe("trimodal").terms) / 3
    assert got["loss"] == pytest.approx((float(want) + 0.0) / 2, rel=1e-5)
    assert set(got["components"]) == {"rgb-caption", "ir-caption", "rgb-ir"}


def test_processor_preprocess_needs_an_image_processor(repo, tmp_path):
    from fusionrs_hf.train.clip import ClipAdapter

    class NoProcessor(ClipAdapter):
        kind = "open_clip"

    with pytest.raises(clip.PresetError, match="needs a transformers CLIP model with an image processor"):
        clip.train_clip(clip.ClipTrainConfig(data=str(repo), preset="rc4-release", config="default",
                                             out=str(tmp_path / "run")), model=NoProcessor())
    assert not (tmp_path / "run").exists()
    with pytest.raises(clip.PresetError, match="sets preprocess = 'processor'"):
        clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", preprocess="fast"))
    with pytest.raises(clip.PresetError, match="sets shuffle = 'global'"):
        clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", shuffle="stream"))
    with pytest.raises(clip.PresetError, match="sets select = 'release'"):
        clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", select="best-val-recall"))
    cfg, overrides = clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", val_batch_size=64))
    assert cfg.val_batch_size == 64 and overrides == ["val_batch_size 64 (preset 128)"]
    assert collections.Counter(clip.OURS[k] for k in ("shuffle", "preprocess", "select")) == collections.Counter(
        ["stream", "fast", "last"])


def test_map_style_with_the_streaming_shuffle_is_refused(repo):
    for shuffle in (True, "stream"):
        with pytest.raises(ValueError, match="streaming reader's order"):
            make_dataloader(repo, config="default", split="train", map_style=True, shuffle=shuffle)


def test_the_global_shuffle_reads_its_rank_when_a_pass_begins(repo, monkeypatch):
    """As the streaming loader: a map-style loader made where WORLD_SIZE says 2 but nothing yet says the rank
    (a Lightning-launched process before its process group) is made, and knows its length; the rank is read
    when the pass begins, and a pass with nothing to say it is refused in one line rather than read as 0."""
    from fusionrs_hf.torch.plan import RankEnvError

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    kw = dict(config="default", split="train", batch_size=4, shuffle="global", seed=3, image_size=32)
    loader = make_dataloader(repo, **kw)
    n = len(loader)
    with pytest.raises(RankEnvError, match="nothing says which rank"):
        next(iter(loader))
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(1 - rank))
        late = make_dataloader(repo, **kw)  # made while the variable says the other rank ...
        monkeypatch.setenv("RANK", str(rank))  # ... read when the pass begins
        shares.append([s for b in late for s in b["sample_id"]])
        assert len(late) == n
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        assert shares[-1] == [s for b in make_dataloader(repo, rank=rank, world_size=2, **kw) for s in b["sample_id"]]
        monkeypatch.setenv("WORLD_SIZE", "2")
    assert shares[0] and not set(shares[0]) & set(shares[1])
