"""Replication over one or many connections: a Peer drives a wire Connection over a trio
stream, the Swarm decides which peer is asked for which block."""
