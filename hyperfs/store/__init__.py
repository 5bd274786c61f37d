"""The database: the LevelDB key layout, the typed Store over it, and fsck of a Store.

It knows how things are stored, not the rules of feeds (those are hyperfs.feeds').
"""
