"""The hidden ``.status`` file: every stored feed with its progress, uploads, network."""

from __future__ import annotations

import json
from collections.abc import Callable

from hyperfs.fs.inodes import Namespace


def status_json(namespace: Namespace, mountpoint: str,
                network: Callable[[], object] | None) -> bytes:
    """The JSON read from ``.status``, as of now; ``network()`` gives the node's part
    (its failure is shown, not raised)."""
    core = namespace.core
    names: dict[bytes, list[str]] = {}
    for name, target in core.names.files().items():
        names.setdefault(target, []).append(name.decode(errors="surrogateescape"))
    feeds = []
    for info in core.info():
        state = namespace.known(info.id)
        feed = state.feed if state is not None and state.wanted else None
        feeds.append({
            "id": info.id.hex(),
            "blocks": info.blocks,
            "local": info.local,
            "kind": info.kind,
            "names": names.get(info.id, []),
            "open": feed is not None,
            "waiting": len(feed.wanted) if feed is not None else 0,
        })
    status: dict[str, object] = {
        "mountpoint": mountpoint,
        "feeds": feeds,
        "uploads": [{"name": u.name.decode(errors="surrogateescape"), "bytes": u.size}
                    for u in namespace.uploads.values()],
        "cache": core.cache.status(),
    }
    if network is not None:
        try:
            status["network"] = network()
        except Exception as exc:
            status["network"] = {"error": str(exc)}
    return (json.dumps(status, indent=2, default=str) + "\n").encode()
