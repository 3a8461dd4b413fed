"""Bodies of the `python -m node` subcommands, one module each."""
