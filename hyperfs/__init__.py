"""hyperfs: hypercore 1.x feeds as a FUSE filesystem."""
