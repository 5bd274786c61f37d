"""One side of the two-namespace mDNS test (run as ``python tests/discovery_mdns_peer.py``).

It advertises and wants one discovery key over mDNS on the given interface address
(standard port 5353: it runs inside a network namespace of its own, so that is private),
prints ``ready``, then one JSON line per peer found, and exits when stdin closes. Talking
over stdin/stdout lets the test synchronise on real events instead of sleeping.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from hyperfs.net.discovery.mdns import MdnsOptions, open_mdns


async def main(address: str, port: int, key: bytes) -> None:
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())

    def found(k: bytes, peer: tuple[str, int]) -> None:
        print(json.dumps({"key": k.hex(), "peer": list(peer)}), flush=True)

    async with open_mdns(port, MdnsOptions(interfaces=(address,)), on_peer=found) as node:
        node.advertise(key)
        node.want(key)
        print("ready", flush=True)
        while await stdin.receive_some():  # until EOF
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="IPv4 address of the interface to use")
    parser.add_argument("--port", type=int, required=True, help="TCP port to advertise")
    parser.add_argument("--key", required=True, help="discovery key, 40 hex chars")
    args = parser.parse_args()
    trio.run(main, args.address, args.port, bytes.fromhex(args.key))
