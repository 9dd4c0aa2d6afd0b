"""Torch models on the task: a standard transformer, and the contract a user's own ``torch.nn.Module`` meets."""
from slr.models.contract import ModuleError, probe  # noqa: F401
from slr.models.transformer import Transformer  # noqa: F401
