"""The network: a Node (TCP listening, dialing with back-off), peer discovery (the
mainline DHT, mDNS, discovery keys) and the node's use of it."""
