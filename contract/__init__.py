"""The torch-free contract every side shares: config and validation, the strategy registry, the
run directory (paths, states, the attempt rule), the log schema, environment names, and the
model, dataset and link tables. Imports nothing of the project outside this package."""
