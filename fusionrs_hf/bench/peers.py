"""The peers a user would pick instead of ours: litdata and MosaicML streaming, optional imports, each read
through its own documented loader and decode path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .pipelines import _Prep, _StockMap

PEERS = {"litdata": "litdata", "mosaic": "mosaicml-streaming"}  # result key -> PyPI name


def peer_missing(name: str) -> str | None:
    """None when peer ``name`` ("litdata" or "mosaic") can be used, else a one-line reason naming the install."""
    try:
        import_litdata() if name == "litdata" else import_mosaic()
    except Exception as e:  # noqa: BLE001 - any import failure means: skip the row, say why
        pkg = PEERS[name]
        why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return (f"{pkg} cannot be imported ({why}); install the `bench` extra, then "
                f"`pip install --no-deps {pkg}` (see `fusionrs bench --help`)")
    return None


def import_litdata():
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request from a benchmark
    import litdata

    return litdata


def import_mosaic():
    """``streaming.base`` (StreamingDataset, StreamingDataLoader, MDSWriter) of mosaicml-streaming.

    The package's ``__init__`` also imports its ready-made vision datasets, which need torchvision; the
    MDS reader and writer do not. Where that import fails (a CPU torch, whose matching torchvision wheel on
    PyPI is a CUDA build), ``streaming.base`` is loaded under a bare ``streaming`` package instead.
    """
    import importlib
    import importlib.util
    import types

    try:
        return importlib.import_module("streaming.base")
    except ImportError as e:
        spec = importlib.util.find_spec("streaming")
        if spec is None or not spec.submodule_search_locations or "torchvision" not in str(e):
            raise
    for k in [k for k in sys.modules if k == "streaming" or k.startswith("streaming.")]:
        del sys.modules[k]
    pkg = types.ModuleType("streaming")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__, pkg.__file__ = spec, spec.origin
    sys.modules["streaming"] = pkg
    try:
        return importlib.import_module("streaming.base")
    except BaseException:
        for k in [k for k in sys.modules if k == "streaming" or k.startswith("streaming.")]:
            del sys.modules[k]
        raise


def torchvision_decode_ok() -> bool:
    """Whether ``torchvision.io.decode_image`` works here (litdata's own image decode)."""
    global _TV_OK
    if _TV_OK is None:
        try:
            import io

            import numpy as np
            import torch
            from PIL import Image
            from torchvision.io import ImageReadMode, decode_image

            buf = io.BytesIO()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG")
            out = decode_image(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), mode=ImageReadMode.RGB)
            _TV_OK = tuple(out.shape) == (3, 8, 8)
        except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
            _TV_OK = False
    return _TV_OK


_TV_OK: bool | None = None


class _PilImageLitSerializer:
    """litdata's ``image`` deserializer with PIL instead of torchvision (litdata's own PIL branch, used where
    torchvision cannot be imported). Returns the HxWx3 uint8 array, one transpose short of litdata's CHW."""

    def serialize(self, item):  # pragma: no cover - reading only
        raise NotImplementedError

    def deserialize(self, data: bytes):
        import io

        import numpy as np
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def can_serialize(self, item) -> bool:  # pragma: no cover - reading only
        return False

    def setup(self, metadata) -> None:
        pass


class _LitMap(_Prep):
    """litdata ``transform``: litdata's decoded images -> the same crop/resize/normalize as ours."""

    def __call__(self, ex: dict) -> dict:
        ex["rgb"] = self.image(ex["rgb"])
        ex["ir"] = self.image(ex["ir"])
        return ex


def loader_litdata(d: Path, args):
    ld = import_litdata()

    serializers = None if torchvision_decode_ok() else {"image": _PilImageLitSerializer()}
    ds = ld.StreamingDataset(str(d), shuffle=False, serializers=serializers, transform=_LitMap(args.image_size))
    return ld.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


_MOSAIC_CLASS = None


def _mosaic_class():
    """A ``streaming.StreamingDataset`` subclass whose ``__getitem__`` transforms, as its docs and vision
    datasets do (made on first use: the base class is an optional import)."""
    global _MOSAIC_CLASS
    if _MOSAIC_CLASS is None:
        sb = import_mosaic()

        class MosaicFusionRS(sb.StreamingDataset):
            def __init__(self, *, image_size: int, **kw) -> None:
                super().__init__(**kw)
                self.prep = _StockMap(image_size)

            def __getitem__(self, idx: int) -> dict:
                return self.prep(super().__getitem__(idx))

        MosaicFusionRS.__qualname__ = MosaicFusionRS.__name__ = "MosaicFusionRS"
        _MOSAIC_CLASS = MosaicFusionRS
    return _MOSAIC_CLASS


_MOSAIC_DATASETS: dict = {}


def loader_mosaic(d: Path, args):
    sb = import_mosaic()
    key = (str(d), args.batch_size, args.image_size)
    ds = _MOSAIC_DATASETS.get(key)
    if ds is None:  # one dataset per directory and process (it holds shared memory keyed by the directory)
        ds = _MOSAIC_DATASETS[key] = _mosaic_class()(local=str(d), remote=None, shuffle=False,
                                                     batch_size=args.batch_size, image_size=args.image_size)
    return sb.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)



def peer_decode(peer_dirs: dict) -> dict[str, str]:
    out = {}
    if "litdata" in peer_dirs:
        out["litdata"] = ("torchvision.io.decode_image (litdata's image serializer)" if torchvision_decode_ok()
                          else "PIL, full size (torchvision cannot be imported here)")
    if "mosaic" in peer_dirs:
        out["mosaic"] = "PIL, full size (MDS `jpeg` column)"
    return out

