"""The hypercore 1.x wire protocol, sans-I/O: bytes in, events out, bytes to send.

Nothing here does I/O or knows about feeds' storage; hyperfs.replication drives a
Connection over a trio stream.
"""
