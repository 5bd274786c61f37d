"""Tree math of hypercore 1.x, pure functions over integers and bytes (no I/O).

flat_tree numbers the nodes, hashes makes them, bitfield says which blocks are held, and
merkle builds trees, picks the nodes of a proof and verifies a block against a feed id.
"""
