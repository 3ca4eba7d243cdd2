"""Sweep orchestration on the host: the grid, sweep files, the Backend interface and its
bookkeeping, and `bin/sweep`'s body. No rank imports this package."""
