"""One module per ``fluoronav`` subcommand; each defines ``register(subparsers)``."""
