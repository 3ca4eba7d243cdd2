"""Examples of what a user brings to torchswitch (a regular package, so that `examples.*` names this folder)."""
