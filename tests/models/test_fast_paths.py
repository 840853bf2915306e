"""The fast CPU paths compute what the plain formulas compute: ScalarGRNs against one GRN per variable, the day
context on one slot per day against one context per stock, and the compiled per-step block against eager mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

import atft.models.atft_gat_fan as atft_gat_fan
from atft.models.day_context import DayContextFiLM
from atft.models.grn import GatedResidualNetwork
from atft.models.variable_selection import VariableSelectionNetwork
from tests.models.test_models import build, make_batch


def _per_variable_reference(vsn: VariableSelectionNetwork, x: torch.Tensor) -> torch.Tensor:
    """TFT's VSN as written: one GatedResidualNetwork(1, 1, var_hidden) per variable, weights from one GRN."""
    n, steps, n_vars = x.shape
    flat = x.reshape(1, n * steps, n_vars)
    weights = torch.softmax(vsn.weight_grn(flat), dim=-1)[0]
    grns = vsn.variable_grns
    embedded = []
    for v in range(n_vars):
        single = GatedResidualNetwork(1, 1, grns.w_glu.shape[-1] // 2, dropout=0.0)
        single.load_state_dict({k: p[v : v + 1] for k, p in grns.state_dict().items()})
        embedded.append(single(flat[..., v : v + 1])[0])  # [M, var_hidden]
    selected = sum(weights[:, v : v + 1] * embedded[v] for v in range(n_vars))
    return vsn.project(selected).reshape(n, steps, -1)


def test_variable_selection_equals_one_grn_per_variable() -> None:
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(n_vars=5, var_hidden=3, hidden=8, dropout=0.0)
    with torch.no_grad():  # away from the initial ones and zeros, so the norm's affine is exercised too
        vsn.variable_grns.norm_weight.normal_()
        vsn.variable_grns.norm_bias.normal_()
    x = torch.randn(4, 6, 5)
    torch.testing.assert_close(vsn(x), _per_variable_reference(vsn, x))


def test_variable_selection_gradients_equal_one_grn_per_variable() -> None:
    torch.manual_seed(1)
    vsn = VariableSelectionNetwork(n_vars=4, var_hidden=2, hidden=6, dropout=0.0)
    x = torch.randn(3, 5, 4)
    vsn(x).square().sum().backward()
    fast = {name: p.grad.clone() for name, p in vsn.named_parameters()}
    vsn.zero_grad()
    # The reference's per-variable GRNs are copies, so only the shared weight GRN and projection compare here.
    _per_variable_reference(vsn, x).square().sum().backward()
    for name, p in vsn.named_parameters():
        if not name.startswith("variable_grns."):
            torch.testing.assert_close(fast[name], p.grad, msg=name)


def _per_stock_context(film: DayContextFiLM, h, x, day, present) -> torch.Tensor:
    """The day context computed once per stock: each stock's own copy of its day's means."""
    weight = present.to(h.dtype).unsqueeze(-1)
    stats = torch.cat([x, h], dim=-1)
    sums = torch.zeros_like(stats).index_add(0, day, stats * weight)
    counts = torch.zeros_like(weight).index_add(0, day, weight)
    gamma, beta = film.film(film.summary(sums[day] / counts[day].clamp_min(1.0))).chunk(2, dim=-1)
    return h * (1.0 + gamma) + beta


def test_day_context_on_one_slot_per_day_equals_one_context_per_stock() -> None:
    torch.manual_seed(0)
    film = DayContextFiLM(width=3, hidden=4)
    with torch.no_grad():
        film.film.weight.normal_()
    h, x = torch.randn(7, 5, 4), torch.randn(7, 5, 3)
    day = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    present = torch.rand(7, 5) > 0.2
    torch.testing.assert_close(film(h, x, day, present), _per_stock_context(film, h, x, day, present))


@pytest.mark.slow  # two inductor compiles (train and eval graphs): ~30 s on 2 cores with a cold cache
def test_compiled_per_step_block_matches_eager_scores_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 stocks per chunk for 12 stocks: three chunks, the last one zero-padded.
    monkeypatch.setattr(atft_gat_fan, "CHUNK_ELEMENTS", 5 * 8 * 6 * 2)
    eager, compiled = build("atft_gat_fan", dropout=0.0), build("atft_gat_fan", dropout=0.0)
    assert compiled.compile_for_cpu()
    batch = make_batch((5, 7))
    for model in (eager, compiled):
        model.train()
        F.mse_loss(model(*batch.inputs()), batch.y).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(*batch.inputs()), eager.eval()(*batch.inputs()))
    code = atft_gat_fan.ATFTGATFAN._per_step.__code__
    entries = len(_debug_get_cache_entry_list(code))  # training with gradients, evaluation without
    # The same values laid out step-major, as some batches arrive: the same graph, no recompile.
    inputs = list(batch.inputs())
    inputs[0] = inputs[0].transpose(0, 1).contiguous().transpose(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), eager(*batch.inputs()))
    assert len(_debug_get_cache_entry_list(code)) == entries == 2
    # The next model of the process starts from an empty cache: the entries of the models before it never count
    # against its recompile limit, past which it would run eagerly without a word.
    assert _debug_get_cache_entry_list(code)
    assert build("atft_gat_fan", dropout=0.0).compile_for_cpu() and not _debug_get_cache_entry_list(code)
