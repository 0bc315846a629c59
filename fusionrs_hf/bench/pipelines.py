"""The pipelines every peer shares with ours: the same post-decode crop/resize/normalize, and the loaders for
ours, stock `datasets` streaming and WebDataset (module level, so that spawn-started workers could pickle them)."""

from __future__ import annotations

import json
from pathlib import Path

from .data import CONFIG, SPLIT


class _Prep:
    """The shared post-decode step: HWC uint8 -> centre crop + resize -> normalized float (3,S,S)."""

    def __init__(self, size: int) -> None:
        from ..decode import Normalizer

        self.size, self.norm = size, Normalizer()

    def image(self, img):
        import numpy as np
        import torch

        from ..decode import center_crop_resize, pil_to_array

        if isinstance(img, torch.Tensor):  # datasets' torch format gives CHW uint8
            arr = img.permute(1, 2, 0) if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3) else img
        elif isinstance(img, np.ndarray):
            arr = img
        else:
            arr = pil_to_array(img)
        return self.norm(center_crop_resize(arr, self.size))


class _StockMap(_Prep):
    def __call__(self, ex: dict) -> dict:
        ex["rgb"] = self.image(ex["rgb"])
        ex["ir"] = self.image(ex["ir"])
        ex["ir_caption"] = ex["ir_caption"] or ""  # default_collate cannot batch None
        return ex


class _WdsMap(_Prep):
    def __call__(self, ex: dict) -> dict:
        meta = ex["json"]
        return {"rgb": self.image(ex["rgb.jpg"]), "ir": self.image(ex["ir.jpg"]), "caption": meta["caption"],
                "ir_caption": meta["ir_caption"] or "", "sample_id": meta["sample_id"], "source": meta["source"]}


class _WdsOursMap(_WdsMap):
    def image(self, img):
        from ..decode import decode_resize

        if isinstance(img, bytes):
            return self.norm(decode_resize(img, self.size))
        return super().image(img)

    def __call__(self, ex: dict) -> dict:
        ex = dict(ex)
        ex["json"] = json.loads(ex["json"])
        return super().__call__(ex)



def loader_ours(repo: Path, args, shuffle: bool = False, normalize: bool = True):
    from ..torch import make_dataloader

    return make_dataloader(repo, config=CONFIG, split=SPLIT, batch_size=args.batch_size, num_workers=args.workers,
                           image_size=args.image_size, shuffle=shuffle, seed=0, shuffle_buffer=1000,
                           normalize=normalize)


def loader_stock(repo: Path, args):
    from datasets import load_dataset
    from torch.utils.data import DataLoader

    from ..torch import BATCH_KEYS

    ds = load_dataset(str(repo), CONFIG, split=SPLIT, streaming=True)
    ds = ds.select_columns(list(BATCH_KEYS))
    ds = ds.with_format("torch").map(_StockMap(args.image_size))
    return DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


def loader_wds(tars: list[str], args, our_decode: bool = False):
    from ..storage import require

    wds = require("webdataset", extra="bench", what="fusionrs bench (the webdataset comparison)")
    from torch.utils.data import DataLoader

    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False)
    ds = ds.map(_WdsOursMap(args.image_size)) if our_decode else ds.decode("pil").map(_WdsMap(args.image_size))
    return DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)

