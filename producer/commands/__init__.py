"""The commands of ``python -m producer``, one module each.

A module adds its command with ``register(subparsers)`` and sets ``handler`` to a
function ``(args, settings) -> exit code``; it holds the command's arguments, how it
runs and what it prints, and imports what it does from the producer's own modules
(:mod:`producer.accounts`, :mod:`producer.client`, :mod:`producer.dlq`, ...) and its
conventions from :mod:`producer.console`. :mod:`producer.cli` lists them.
"""
