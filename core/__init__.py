"""What every layer of mindgap shares: user errors, atomic file writes and the config machinery.

The layers import one way, checked by import-linter in `make test` (setup.cfg):
recipes → trainer (the library) → eval (tasks, metrics, reports) → core.
"""
