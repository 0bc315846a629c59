"""FusionRS on Hugging Face `datasets`: RGB–infrared–text remote-sensing triplets.

``fusionrs_hf.load("iraware", split="train", streaming=True)`` is the short way in; everything
else (schema, layout, card, build, check, push, torch streaming, trainers) lives in one module each.
"""

from __future__ import annotations

import os

from . import secrets as _secrets  # noqa: F401 - installs the log-record scrubbing for the whole process
from .layout import CONFIG_NAMES, DEFAULT_REPO_ID, SPLITS
from .schema import FIELD_NAMES, SOURCES

__version__ = "0.1.0"
__all__ = ["load", "repo_id", "FEATURES", "FIELD_NAMES", "SOURCES", "SPLITS", "CONFIG_NAMES", "__version__"]


def __getattr__(name: str):
    # FEATURES needs `datasets`; built on first access so `import fusionrs_hf.torch` stays light.
    if name == "FEATURES":
        from .schema import features

        return features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def repo_id(repo: str | None = None) -> str:
    """The repo to read: the argument, else ``$FUSIONRS_REPO``, else :data:`layout.DEFAULT_REPO_ID`."""
    return repo or os.environ.get("FUSIONRS_REPO") or DEFAULT_REPO_ID


def load(config: str = "default", split: str | None = None, *, streaming: bool = False,
         repo: str | None = None, revision: str | None = None, storage_options: dict | None = None, **kwargs):
    """``datasets.load_dataset`` on a FusionRS repo, config checked first.

    ``repo`` is a Hub id, a local folder or any fsspec URL (``s3://bucket/fusionrs``, ``file:///abs/path``,
    ``hf://datasets/owner/name@rev``); ``storage_options`` (fsspec's: ``endpoint_url``, ``key``, ``secret``,
    ...) reach the store. A repo on a store that stock ``datasets`` cannot open as a repo folder is loaded
    with the ``parquet`` builder over the config's shards (the same call the card's Load snippet shows);
    see :mod:`fusionrs_hf.storage`.

    Returns what ``load_dataset`` returns: a (Iterable)DatasetDict when ``split`` is None,
    else one (Iterable)Dataset. Extra keyword arguments go to ``load_dataset`` unchanged.
    Raises :class:`~fusionrs_hf.storage.HubUnreachableError` (one line: repo and endpoint) within a few
    seconds when the Hub is offline (``HF_HUB_OFFLINE``) or does not answer.

    The rows' images are decoded by stock ``datasets``, with every PIL plugin, so first PIL's EPS opener is
    unregistered (no Ghostscript from data) and every ``datasets`` image decode of the process is held to the
    limits of :mod:`fusionrs_hf.limits` (:mod:`fusionrs_hf.pil_guard`): an image past them raises
    :class:`~fusionrs_hf.pil_guard.ImageRefusedOnDecode` unread, naming the row's image. The dataset carries
    the guard into the processes it is pickled to (DataLoader workers started with ``spawn``, ``forkserver``).
    """
    from .pil_guard import follow
    from .pil_guard import install as guard_image_decoding
    from .secrets import register_options, scrubbing

    guard_image_decoding()  # before any row can be decoded: EPS unregistered, scan and pixel limits on datasets
    register_options(storage_options)
    with scrubbing():  # a server or store echoing a credential in its error must not put it in ours
        return follow(_load(config, split, streaming=streaming, repo=repo, revision=revision,
                            storage_options=storage_options, **kwargs))


def _load(config: str, split: str | None, *, streaming: bool, repo: str | None, revision: str | None,
          storage_options: dict | None, **kwargs):
    from .errors import UnknownConfigError
    from .storage import HubUnreachableError, locate

    loc = locate(repo_id(repo), revision, storage_options)
    if config not in CONFIG_NAMES and (loc.kind == "hub" or config not in _repo_configs(loc)):
        raise UnknownConfigError(f"unknown FusionRS config {config!r}; expected one of {', '.join(CONFIG_NAMES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    from huggingface_hub import constants

    offline = loc.kind == "hub" and constants.is_offline_mode()
    if loc.kind == "hub" and not offline:
        loc.ensure_reachable()  # one quick question: an unreachable Hub fails in seconds, not after retries
    from datasets import load_dataset

    args, kw = loc.load_call(config, split)
    if loc.kind != "fsspec":
        kw.setdefault("revision", revision)
    sizes = _local_footers(loc.root, kw["data_files"]) if loc.kind == "local" else None
    try:
        ds = load_dataset(*args, split=split, streaming=streaming, **kw, **kwargs)
        if streaming and sizes is not None:
            for part in ([ds] if split is not None else list(ds.values())):
                part.info.splits = sizes
        return ds
    except ConnectionError as e:
        if not offline or isinstance(e, HubUnreachableError):
            raise
        from .storage import hub_endpoint

        # HF_HUB_OFFLINE: datasets looked in its cache only (that is what offline mode is for) and found nothing
        raise HubUnreachableError(
            f"dataset repo {loc.repo_id}: not in the local cache, and the Hub is offline here (HF_HUB_OFFLINE is "
            f"set), so {hub_endpoint(loc.storage_options)} was not contacted; unset HF_HUB_OFFLINE, or use a local "
            "copy of the repo", repo=loc.repo_id or "", endpoint=hub_endpoint(loc.storage_options),
            offline=True) from None


def _local_footers(root: str, data_files: dict[str, list[str]]):
    """One read of a local folder's shard footers (a few KB each) and page headers (a small read a page) before
    `datasets` touches a page: every row group is held to :data:`~fusionrs_hf.limits.MAX_ROW_GROUP_BYTES` by
    what its page headers say Arrow will allocate (a non-streaming load inflates all of them into its Arrow
    cache; a few KB of zstd can claim GBs, and a footer can understate them), every shard to
    :data:`~fusionrs_hf.limits.MIN_BYTES_PER_ROW`; and the split sizes for ``info.splits`` of a streamed
    load (the ``parquet`` builder over named shards knows none, and the card's ``dataset_info``, which stock
    ``load_dataset(folder)`` copies, is not read, since it may be older than the shards)."""
    import pyarrow.parquet as pq
    from datasets import SplitDict, SplitInfo

    from .limits import refuse_big_row_groups

    sizes = SplitDict()
    for name, files in data_files.items():
        rows = 0
        for f in files:
            with open(f, "rb") as fh:
                md = pq.ParquetFile(fh).metadata
                refuse_big_row_groups(md, None, f"shard={os.path.relpath(f, root)}", fh, shard=True)
            rows += md.num_rows
        sizes.add(SplitInfo(name=name, num_examples=rows))
    return sizes


def _repo_configs(loc) -> tuple[str, ...]:
    """Config names of a repo that declares sources of its own (``fusionrs_sources.json``)."""
    from .layout import layout_for

    try:
        return layout_for(loc.fs(), loc.root).config_names
    except Exception:  # noqa: BLE001 - unreadable: only the registry's configs are known
        return CONFIG_NAMES
