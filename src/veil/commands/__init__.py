"""One module per CLI command group. Each defines `register(subparsers)`; the parser it adds sets
`func=run` where `run(args) -> int` returns the exit code (0 ok, 1 findings/failures, 2 usage).
Commands raise VeilError for a readable one-line failure; cli.main prints it and exits 1.
"""
