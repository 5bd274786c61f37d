"""What a seeder sends: every Response must carry its own block, also when many are
queued before any is sent (a block is queued as it was read, not copied into its
Response: ``Outbox.put_parts``), whatever their sizes around 64 KiB.
"""

from __future__ import annotations

import random
from pathlib import Path

from hyperfs.testing.network import served_responses

SERVE_BUFFER = 64 * 1024


async def test_queued_responses_keep_their_own_blocks(tmp_path: Path) -> None:
    rng = random.Random(11)
    sizes = [SERVE_BUFFER, SERVE_BUFFER + 1, 10, 3 * SERVE_BUFFER, SERVE_BUFFER - 1, 1] * 5
    blocks = [rng.randbytes(size) for size in sizes]
    # Asked for all at once, the seeder answers them in one go, queueing many Responses
    # (the buffer reused under each) before its writer sends the first.
    responses = await served_responses(tmp_path / "seeder", blocks)
    assert [e.block for e in responses] == list(range(len(blocks)))
    for event in responses:
        assert event.data == blocks[event.block], (event.block, len(event.data))
