"""The FUSE filesystem: pyfuse3 Operations over a core, and the mount's lifecycle."""
