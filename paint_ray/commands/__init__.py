"""Sub-commands of `paint-ray` beyond `patch`: each module adds its parser with `register(subparsers)`."""
