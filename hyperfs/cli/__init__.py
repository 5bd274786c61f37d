"""The `hyperfs` command line: argument parsing and the sub-commands."""
