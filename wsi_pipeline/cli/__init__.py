"""Command-line entry points: ``wsi`` (stage subcommands) and ``wsi-run`` (whole pipeline)."""
