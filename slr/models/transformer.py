"""A standard transformer on the task (``docs/transformer.md``): tokens embedded linearly, pre-LayerNorm blocks of
multi-head attention (and an optional MLP), read out by a learned query (a ``[CLS]``-style token) or mean pooling.
It meets the module contract of :mod:`slr.models.contract`: ``attention(X)`` and ``effective_directions()``."""
from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("pre", "none")
POOLS = ("query", "mean")
POSITIONALS = ("none", "learned")


class Block(nn.Module):
    """One encoder block: ``H + MHA(norm(H))``, then ``H + MLP(norm(H))`` when ``mlp > 0`` (pre-norm, or no norm)."""

    def __init__(self, d_model: int, n_heads: int, mlp: float, norm: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        # no projection biases (as nanoGPT's bias=False): the key bias shifts all of a query's scores equally, so its
        # exact gradient is 0 and Adam would only amplify rounding noise in it; the readout's bias carries the offset
        self.attn = nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
        hidden = max(1, round(mlp * d_model)) if mlp > 0 else 0
        self.norm2 = nn.LayerNorm(d_model) if norm == "pre" and hidden else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model)) if hidden else None

    def forward(self, H: torch.Tensor, mask: torch.Tensor | None, first_only: bool = False):
        """``H`` (B, T, d_model) -> (B, T, d_model) and the weights (B, T, T); with ``first_only`` only the first
        row (the query token) is computed: (B, 1, d_model) and (B, 1, T)."""
        A = self.norm1(H)
        Q = A[:, :1] if first_only else A
        if first_only:
            H, mask = H[:, :1], mask[:1]
        # need_weights=True takes MultiheadAttention's explicit softmax path: torch.func.vmap has batching rules for
        # it (not for the fused CPU attention kernel, which vmap runs several times slower), and it returns the weights
        out, weights = self.attn(Q, A, A, attn_mask=mask, need_weights=True, average_attn_weights=True)
        H = H + out
        if self.mlp is not None:
            H = H + self.mlp(self.norm2(H))
        return H, weights  # (B, T or 1, d_model), (B, T or 1, T) averaged over heads


class Transformer(nn.Module):
    """A standard transformer on the ``L`` tokens (docs/transformer.md), built from ``nn.MultiheadAttention`` blocks.

    Tokens are embedded linearly (``E``: d -> d_model, no bias) and by default carry no positional encoding: the
    paper's task is exchangeable in the positions (``J0`` is uniform and the other tokens are i.i.d.), so the
    Bayes-optimal predictor is a symmetric function of the tokens, and a positional code could only add a spurious
    dependence on the order. Under a non-uniform position prior (``docs/variants.md``) Bayes is not symmetric:
    ``positional="learned"`` adds a learned embedding ``P_l`` (d_model) to token ``l``, so that the model can use it. ``n_layers`` blocks (self-attention, then an MLP of width ``mlp * d_model`` when ``mlp > 0``,
    pre-LayerNorm when ``norm="pre"``) are followed by a linear readout of

    - ``pool="query"``: a learned ``[CLS]``-style query token, prepended to the sequence and updated by every block;
      it attends to the ``L`` tokens only (not to itself), so with one block, one head, no MLP and no norm the model
      is ``T(X) = sum_l softmax_l(<u_K, x_l>) <u_V, x_l> + c``: the softmax attention of docs/task-and-predictors.md §2
      with ``lam k = u_K``
      and ``v = u_V`` (:meth:`effective_directions`);
    - ``pool="mean"``: the mean of the tokens' final representations.
    """

    def __init__(self, d: int, L: int, d_model: int = 16, n_heads: int = 1, n_layers: int = 1, mlp: float = 0.0,
                 norm: str = "none", pool: str = "query", positional: str = "none"):
        super().__init__()
        if (norm not in NORMS or pool not in POOLS or positional not in POSITIONALS or n_layers < 1 or n_heads < 1
                or d_model % n_heads or mlp < 0):
            raise ValueError(f"invalid transformer: norm={norm!r}, pool={pool!r}, positional={positional!r}, "
                             f"n_layers={n_layers}, n_heads={n_heads}, d_model={d_model}, mlp={mlp}")
        self.d, self.L, self.d_model, self.n_heads, self.pool = d, L, d_model, n_heads, pool
        self.embed = nn.Linear(d, d_model, bias=False)
        self.position = nn.Parameter(0.1 * torch.randn(L, d_model)) if positional == "learned" else None  # (L, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp, norm) for _ in range(n_layers))
        self.query = nn.Parameter(torch.randn(d_model) / math.sqrt(d_model)) if pool == "query" else None
        self.final_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.readout = nn.Linear(d_model, 1)
        # the key and value directions are those of one linear path from the tokens to the output
        self.defines_directions = pool == "query" and n_layers == 1 and n_heads == 1 and mlp == 0

    def _run(self, X: torch.Tensor):
        H = self.embed(X)  # (B, L, d_model)
        if self.position is not None:
            H = H + self.position
        B, L, _ = H.shape
        mask = None
        if self.pool == "query":
            H = torch.cat([self.query.expand(B, 1, self.d_model), H], dim=1)  # (B, 1 + L, d_model)
            mask = torch.zeros(L + 1, L + 1, dtype=H.dtype, device=H.device)
            mask[0, 0] = -math.inf  # the query attends to the tokens, not to itself
        for i, block in enumerate(self.blocks):  # the last block only updates the query: nothing reads the others
            H, weights = block(H, mask, first_only=self.pool == "query" and i == len(self.blocks) - 1)
        pooled = H[:, 0] if self.pool == "query" else H.mean(1)  # (B, d_model)
        return self.readout(self.final_norm(pooled)).squeeze(-1), weights

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predictions (B,) from tokens (B, L, d)."""
        return self._run(X)[0]

    def attention(self, X: torch.Tensor) -> torch.Tensor:
        """Weights (B, L) of the readout on each token: the query's attention in the last block, averaged over heads
        (``pool="query"``), or ``1/L`` (``pool="mean"``)."""
        if self.pool == "mean":
            return torch.full(X.shape[:-1], 1.0 / X.shape[-2], dtype=X.dtype, device=X.device)
        return self._run(X)[1][:, 0, 1:]

    def predict_and_attention(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward(X), attention(X))`` from one pass through the blocks: (B,), (B, L)."""
        y, weights = self._run(X)
        if self.pool == "mean":
            return y, torch.full(X.shape[:-1], 1.0 / X.shape[-2], dtype=X.dtype, device=X.device)
        return y, weights[:, 0, 1:]

    def effective_directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective key ``u_K = E^T J1^T W_K^T q / sqrt(d_head)`` and value ``u_V = E^T J1^T W_V^T W_O^T Jf^T w``
        (docs/transformer.md), defined for one block with one head and no MLP (``defines_directions``).

        ``q = W_Q n1(query)`` is the query, ``w`` the readout, ``J = diag(g) (I - 11^T/d_model)`` the linear part
        of a LayerNorm with gain ``g`` (the identity without norm). Without norms the score of token ``x`` is
        ``<u_K, x>`` plus a constant and its value ``<u_V, x>`` plus a constant; with pre-norm, up to each token's
        LayerNorm scale ``1/std(E x)``.
        """
        if not self.defines_directions:
            raise ValueError("effective directions are defined for pool=query, one block, one head and no MLP")
        block = self.blocks[0]
        W_Q, W_K, W_V = block.attn.in_proj_weight.chunk(3)  # each (d_model, d_model)
        q = W_Q @ block.norm1(self.query)  # (d_model,)
        key = self._through_norm(block.norm1, W_K.T @ q) / math.sqrt(self.d_model)
        value = block.attn.out_proj.weight.T @ self._through_norm(self.final_norm, self.readout.weight[0])
        value = self._through_norm(block.norm1, W_V.T @ value)
        return self.embed.weight.T @ key, self.embed.weight.T @ value  # (d,), (d,)

    @staticmethod
    def _through_norm(norm: nn.Module, u: torch.Tensor) -> torch.Tensor:
        """``J^T u`` for the linear part ``J = diag(g) P`` of a LayerNorm (``P`` removes the mean); ``u`` without norm."""
        if isinstance(norm, nn.LayerNorm):
            u = norm.weight * u
            return u - u.mean()
        return u
