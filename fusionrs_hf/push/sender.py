"""The snapshot of each planned upload, taken right before it is sent (:class:`_Sender`), and the card rendered
last from the footers of exactly the bytes sent."""

from __future__ import annotations

from pathlib import Path

from ..card import ShardInfo, render_card
from ..layout import DEFAULT_LAYOUT
from .local import _card_assets, _Snapshot, read_local
from .plan import LocalFile, LocalRepoError, PushPlan, RemoteFile


class _Sender:
    """Takes the snapshot of each planned upload right before it is sent, and renders the final card from
    the footers of exactly the bytes sent (plus the unchanged shards and the remote-only ones kept).

    Snapshots are made one commit (Hub) or one file (fsspec) at a time, so the temporary folder needs room
    for one commit's files, not the whole repo.
    """

    def __init__(self, local: Path, plan: PushPlan, snapshot: _Snapshot, tgt, remote: dict[str, RemoteFile],
                 infos: dict[str, ShardInfo], sample: bool) -> None:
        self.local, self.plan, self.snapshot, self.tgt, self.remote = local, plan, snapshot, tgt, remote
        self.infos = infos  # shard -> footer counts of what the remote will hold
        self.sample = sample
        self.sent: dict[str, LocalFile] = {}
        self.warnings: list[str] = []

    def take(self, planned: LocalFile) -> LocalFile | None:
        """The snapshot of ``planned`` (copied and hashed now); None if the file vanished since planning
        (the card then counts what the remote holds of it, if anything)."""
        name = planned.info.name if planned.info is not None else \
            (self.plan.layout or DEFAULT_LAYOUT).parse_shard_path(planned.relpath)
        r = self.remote.get(planned.relpath)
        try:
            f = read_local(self.local, name, self.snapshot.path_for(planned.relpath), blob=r is not None and not r.sha256)
        except LocalRepoError as e:
            if "disappeared" not in str(e):
                raise LocalRepoError(f"{e}; the push stopped before the card was updated: re-run it when the repo "
                                     "is stable") from None
            self.infos.pop(planned.relpath, None)
            if r is not None:
                info = self.tgt.remote_shard_info(planned.relpath)
                if info is not None:
                    self.infos[planned.relpath] = info
            self.warnings.append(f"local {planned.relpath} disappeared during the push; not uploaded (the card "
                                 "counts what the remote holds)")
            return None
        if planned.stat is not None and f.stat != planned.stat:
            self.warnings.append(f"local {planned.relpath} changed after the plan; uploaded as read when it was sent "
                                 "(the card counts that version)")
        self.infos[f.relpath] = f.info
        self.sent[f.relpath] = f
        return f

    def final_assets(self) -> dict[str, bytes]:
        """The pictures to send with the final card (those that differ from what the remote has); call after
        :meth:`final_card`."""
        assets = getattr(self, "_assets", None)
        if assets is None:
            assets = self.plan.assets
        out = {}
        for rel, data in sorted(assets.items()):
            if self.plan.assets.get(rel) == data and self.plan.assets_state.get(rel) == "unchanged":
                continue
            r = self.remote.get(rel)
            if r is not None and self.tgt.same_bytes(data, r):
                continue
            out[rel] = data
        self.plan.assets = dict(assets)
        return out

    def final_card(self) -> bytes | None:
        """The card of what the remote holds now; None if the remote's card already says exactly that."""
        shards = sorted(self.infos.values(), key=lambda s: s.name)
        self.plan.card_shards = shards
        self._assets = _card_assets(self.local, shards, self.plan.layout or DEFAULT_LAYOUT)
        data = render_card(shards, sample=self.sample, location=self.tgt.card_location,
                           lay=self.plan.layout or DEFAULT_LAYOUT, assets=self._assets).encode("utf-8")
        if data == self.plan.readme_bytes and self.plan.readme == "unchanged":
            return None
        self.plan.readme_bytes = data
        return data
