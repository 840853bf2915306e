"""ATFT-GAT-FAN: causal FAN -> variable selection -> day-context FiLM -> GRU over the window -> GATv2 over the day's
stock graph -> gated fusion -> one score per horizon.

FAN's removed (non-stationary) part is not thrown away: FAN itself predicts it on a separate branch, and for a ranker
it carries today's level, which is what ranks stocks. Here the variable selection network sees the FAN residual and
a linear embedding of the removed part is added at every step: without it, a problem whose signal is today's
level is lost to the residual.

The day-context FiLM lets every step's embedding depend on that step's cross-section (see ``day_context``), at every
step rather than on the final state only, and it reads the inputs' cross-sectional means as well as the
embeddings'. Scores therefore depend on the day's other stocks: batches hold whole days. The measurements behind
these choices are in benchmarks/README.md ("Design measurements behind the model's defaults").

With ``model.linear_skip`` a linear map of named feature groups' values on the day itself is added to the scores:
the wide path of a wide-and-deep model, for signal that one linear map of the day reads, as ridge does. It is off by
default: on real prices it ranked below the model without it (benchmarks/README.md, "A linear skip").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from atft.config import ModelConfig
from atft.models.contract import ContractModel
from atft.models.day_context import DayContextFiLM
from atft.models.fan import CausalFAN
from atft.models.fusion import GatedFusion
from atft.models.variable_selection import VariableSelectionNetwork
from schemas.manifest import group_positions

# On CPU, FAN and the VSN run on chunks of stocks whose largest temporary, [rows·L, F, var_hidden], stays near this
# many floats. CPU tensors of ~100 MB are freshly mmap-ed and page-faulted on every op; chunks of a few MB are reused
# from the heap and stay in cache: forward+backward per 1,000 stock-days (F=152) went from 0.73 s to 0.38 s.
CHUNK_ELEMENTS = 1 << 20


class TemporalEncoder(nn.Module):
    """Causal GRU over the window: [N, L, H] -> [N, L, H], the state at step s sees steps <= s only.

    Missing steps (mask False: before listing, halted) get a zero input, so they add no fabricated observation;
    the GRU still advances one step there, which keeps the step count, and with it the age of every observation,
    the same for every stock.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden, hidden, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        states, _ = self.gru(x * mask.unsqueeze(-1).to(x.dtype))
        return states


class ATFTGATFAN(ContractModel):
    """Scores [N, H] for the stock-days of a batch; see ``atft.models.build_model``."""

    name = "atft_gat_fan"

    def __init__(
        self, config: ModelConfig, width: int, horizons: list[int], manifest_sha256: str,
        groups: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, width, horizons, manifest_sha256, groups)
        hidden = config.hidden
        if hidden % config.gat_heads:
            raise ValueError(f"hidden {hidden} must be a multiple of gat_heads {config.gat_heads}")
        self.fan = CausalFAN(config.fan_window, config.fan_top_k)
        self.selection = VariableSelectionNetwork(self.layer_width, config.var_hidden, hidden, config.dropout)
        self.nonstationary = nn.Linear(self.layer_width, hidden)
        self.encoder = TemporalEncoder(hidden)
        self.day_context = DayContextFiLM(self.layer_width, hidden)
        # GATv2Conv adds one self-loop per node itself; the input graph has none, so none are added here.
        self.graph_layers = nn.ModuleList(
            GATv2Conv(hidden, hidden // config.gat_heads, heads=config.gat_heads, edge_dim=2, add_self_loops=True)
            for _ in range(config.gat_layers)
        )
        self.graph_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(config.gat_layers))
        self.fusion = GatedFusion(hidden)
        self.trunk = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(config.dropout))
        # A plain linear output, one row per horizon: nothing after it may squash the spread of the scores.
        self.head = nn.Linear(hidden, len(horizons))
        self.linear_skip = self._linear_skip(config, groups, len(horizons))

    def _linear_skip(self, config: ModelConfig, groups: Sequence[str] | None, outputs: int) -> nn.Linear | None:
        """The wide path on ``model.linear_skip``'s inputs, or None. Built after every other layer, so that they draw
        the same initial weights with or without it, and zero, so that an untrained model scores as without it."""
        if not config.linear_skip:
            return None
        if groups is None:
            raise ValueError("model.linear_skip is set: building the model needs the manifest's feature groups")
        owner = f"manifest {self.manifest_sha256}"
        columns = group_positions(config.linear_skip, groups, "model.linear_skip", owner)
        # A buffer, as input_columns: a checkpoint records which inputs its skip reads.
        self.register_buffer("skip_columns", torch.tensor(columns, dtype=torch.long))
        skip = nn.Linear(len(columns), outputs)
        nn.init.zeros_(skip.weight)
        nn.init.zeros_(skip.bias)
        return skip

    def _per_step(self, x: Tensor) -> Tensor:
        """[n, L, F] scaled inputs -> [n, L, hidden]; every stock and step independent, so chunking changes nothing."""
        residual = self.fan(x)
        return self.selection(residual) + self.nonstationary(x - residual)

    def input_weights(self, x: Tensor, x_mask: Tensor) -> Tensor:
        """[N, F] variable-selection weights of each stock, averaged over the steps of its window."""
        residual = self.fan(self.layer_inputs(self.prepare_inputs(x, x_mask)))
        weights = self.selection.selection_weights(residual.reshape(-1, residual.shape[-1]))
        return self.per_input(weights.reshape(residual.shape).mean(1))

    def compile_for_cpu(self) -> bool:
        """Run FAN and the VSN through torch.compile (inductor's C++ kernels), on chunks of one fixed size.

        They are elementwise over [V, var_hidden, rows] tensors, which eager mode writes to memory and reads back
        once per op; compiled, they fuse into a few loops. A fixed chunk size (the last chunk zero-padded, rows being
        independent) gives one graph per mode (train, eval) and never a recompile for a new day size.
        """
        # Dynamo keeps compiled entries per code object, shared by every model of the class in the process and capped
        # at its recompile limit (8), past which it runs the function eagerly without failing. Each mode (training
        # with gradients, evaluation without) and each thread count the host's load leads to is an entry, so a
        # process that trains model after model (a backtest replay) would reach the cap. Each new model therefore
        # starts from an empty cache; inductor's on-disk cache makes its few recompiles cost seconds.
        torch._dynamo.reset_code(ATFTGATFAN._per_step.__code__)
        self._compiled_per_step = torch.compile(self._per_step, dynamic=False)
        return True

    def _per_step_chunked(self, x: Tensor) -> Tensor:
        rows = max(1, CHUNK_ELEMENTS // (x.shape[1] * x.shape[2] * self.config.var_hidden))
        compiled = getattr(self, "_compiled_per_step", None)
        if compiled is None:
            return torch.cat([self._per_step(chunk) for chunk in x.split(rows)])
        # One memory layout for every call: a batch can arrive step-major, and dynamo guards on strides.
        chunks = list(x.contiguous().split(rows))
        if pad := rows - chunks[-1].shape[0]:
            chunks[-1] = torch.cat([chunks[-1], x.new_zeros(pad, *x.shape[1:])])
        return torch.cat([compiled(chunk) for chunk in chunks])[: x.shape[0]]

    def forward(self, x: Tensor, x_mask: Tensor, edge_index: Tensor, edge_attr: Tensor, day: Tensor) -> Tensor:
        x = self.prepare_inputs(x, x_mask)
        inputs = self.layer_inputs(x)
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            # Accelerators, export and torch.compile take all rows at once: no loop whose length depends on N.
            per_step = self._per_step(inputs)
        else:
            per_step = self._per_step_chunked(inputs)
        h_time = self.encoder(self.day_context(per_step, inputs, day, x_mask), x_mask)[:, -1]
        h_graph = h_time
        for conv, norm in zip(self.graph_layers, self.graph_norms, strict=True):
            update = F.elu(conv(h_graph, edge_index, edge_attr))
            h_graph = norm(h_graph + F.dropout(update, self.config.dropout, self.training))
        scores = self.head(self.trunk(self.fusion(h_time, h_graph)))
        if self.linear_skip is not None:
            scores = scores + self.linear_skip(x[:, -1, self.skip_columns])
        return self.neutral(scores, x, x_mask, day)
