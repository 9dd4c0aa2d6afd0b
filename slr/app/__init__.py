"""The Hydra apps (the only code that imports Hydra): schema and validation, the job's life, the builders of each
model family, the final evaluation, ``slr`` and ``slr-landscape``."""
