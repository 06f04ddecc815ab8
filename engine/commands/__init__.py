"""One module per `engine` subcommand; each exposes `register(subparsers)` and `run(args) -> int`."""
