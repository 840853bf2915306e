"""Models: the one forward signature, the input contract, causality, graph self-loops, gradients, score spread."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.export import Dim

import atft.models.atft_gat_fan as atft_gat_fan
from atft.config import ModelConfig
from atft.data.batch import DayBatch
from atft.models import build_model
from atft.models.atft_gat_fan import TemporalEncoder
from atft.models.contract import STD_FLOOR, InputWidthError
from atft.models.day_context import DayContextFiLM
from atft.models.fan import CausalFAN, kth_largest

WIDTH, LOOKBACK = 6, 8
HORIZONS = [1, 5, 10]
SHA = "3f2a9c" + "0" * 58
TINY = {
    "lookback": LOOKBACK,
    "hidden": 16,
    "var_hidden": 2,
    "fan_window": 4,
    "gat_layers": 2,
    "patch_len": 4,
    "patch_stride": 2,
    "transformer_layers": 1,
    "attention_heads": 2,
}
MODELS = ["atft_gat_fan", "apex"]


def build(name: str, width: int = WIDTH, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**TINY, **overrides}, name=name), width, HORIZONS, SHA)


def make_batch(
    stocks_per_day: tuple[int, ...] = (5, 7), width: int = WIDTH, lookback: int = LOOKBACK, seed: int = 0
) -> DayBatch:
    """Random days; every ordered pair of distinct stocks of a day is an edge (never across days, no self-loops)."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(stocks_per_day)
    day = torch.cat([torch.full((k,), d) for d, k in enumerate(stocks_per_day)])
    src, dst = torch.nonzero((day[:, None] == day[None, :]) & ~torch.eye(n, dtype=torch.bool)).T
    correlation = torch.rand(src.shape[0], generator=gen) * 2 - 1
    same_sector = (torch.rand(src.shape[0], generator=gen) < 0.3).float()
    x_mask = torch.ones(n, lookback, dtype=torch.bool)
    x_mask[0, :3] = False  # listed during the window
    return DayBatch(
        x=torch.randn(n, lookback, width, generator=gen) * x_mask.unsqueeze(-1),
        x_mask=x_mask,
        edge_index=torch.stack([src, dst]),
        edge_attr=torch.stack([correlation, same_sector], dim=1),
        day=day,
        slot=torch.cat([torch.arange(k) for k in stocks_per_day]),
        y=torch.randn(n, len(HORIZONS), generator=gen),
        y_mask=torch.ones(n, len(HORIZONS), dtype=torch.bool),
        n_days=len(stocks_per_day),
        max_stocks=max(stocks_per_day),
    )


@pytest.mark.parametrize("name", MODELS)
def test_scores_every_stock_day_and_horizon(name: str) -> None:
    batch = make_batch()
    scores = build(name)(*batch.inputs())
    assert scores.shape == (batch.x.shape[0], len(HORIZONS)) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # nn.GRU re-assigns its flat weights while traced
@pytest.mark.parametrize("name", MODELS)
def test_exported_program_takes_the_same_inputs_and_matches_eager_on_any_day_size(name: str) -> None:
    assert_exports_as_eager(build(name).eval())


def assert_exports_as_eager(model: torch.nn.Module) -> None:
    """``model`` exported with dynamic rows and edges scores any day size as it does eagerly."""
    batch = make_batch()
    rows, edges = Dim("rows", min=1), Dim("edges", min=0)
    program = torch.export.export(
        model,
        args=batch.inputs(),
        dynamic_shapes=({0: rows}, {0: rows}, {1: edges}, {0: edges}, {0: rows}),
    )
    for other in (batch, make_batch((9, 4, 11), seed=1), make_batch((1,), seed=2)):  # the last has no edges
        torch.testing.assert_close(program.module()(*other.inputs()), model(*other.inputs()))


@pytest.mark.parametrize("name", MODELS)
def test_a_batch_wider_than_the_manifest_is_refused_naming_both_widths_and_the_manifest(name: str) -> None:
    model = build(name, width=82)
    with pytest.raises(InputWidthError) as info:
        model(*make_batch(width=437).inputs())
    message = str(info.value)
    assert "437" in message and "82" in message and SHA in message
    assert model.input_mean.shape == (82,)  # nothing was resized


@pytest.mark.parametrize("name", MODELS)
def test_a_wrong_lookback_is_refused(name: str) -> None:
    with pytest.raises(InputWidthError, match=f"lookback {LOOKBACK + 1} does not match the model's {LOOKBACK}"):
        build(name)(*make_batch(lookback=LOOKBACK + 1).inputs())


def test_fan_output_up_to_a_step_ignores_every_later_step() -> None:
    fan = CausalFAN(window=4, top_k=2)
    x = torch.randn(3, 12, 5)
    out = fan(x)
    for t in range(11):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn(3, 11 - t, 5) * 10
        torch.testing.assert_close(fan(changed)[:, : t + 1], out[:, : t + 1])


def test_fan_last_step_is_not_constant() -> None:
    last = CausalFAN(window=8, top_k=2)(torch.randn(200, 20, 3))[:, -1]
    assert last.std(0).min() > 0.1


def test_fan_removes_exactly_the_dominant_frequencies() -> None:
    window, steps = 8, 24
    s = torch.arange(steps, dtype=torch.float32)

    def wave(bin_: int) -> torch.Tensor:
        return torch.sin(2 * math.pi * bin_ * s / window + 0.3)

    fan = CausalFAN(window=window, top_k=2)
    # A constant level is removed from the very first step: padding repeats the first step, never zeros.
    level = fan(torch.full((1, steps, 1), 3.0))
    torch.testing.assert_close(level, torch.zeros_like(level), atol=1e-5, rtol=0)
    # Level + one sinusoid: both removed, nothing left once the window is full.
    pure = fan((3.0 + wave(1)).view(1, steps, 1))[0, window - 1 :, 0]
    torch.testing.assert_close(pure, torch.zeros_like(pure), atol=1e-5, rtol=0)
    # A weaker third component is not among the top 2 and is all that remains.
    mixed = fan((3.0 + wave(1) + 0.3 * wave(3)).view(1, steps, 1))[0, window - 1 :, 0]
    torch.testing.assert_close(mixed, 0.3 * wave(3)[window - 1 :], atol=1e-5, rtol=0)


def test_fan_matches_a_per_step_rfft_irfft_reference() -> None:
    window, top_k, steps = 8, 3, 16
    x = torch.randn(4, steps, 3)
    padded = torch.cat([x[:, :1].expand(-1, window - 1, -1), x], dim=1)
    expected = torch.empty_like(x)
    for t in range(steps):
        spectrum = torch.fft.rfft(padded[:, t : t + window], dim=1)
        keep = torch.zeros_like(spectrum.real).scatter_(1, spectrum.abs().topk(top_k, dim=1).indices, 1.0)
        expected[:, t] = x[:, t] - torch.fft.irfft(spectrum * keep, n=window, dim=1)[:, -1]
    # Padded windows can tie in amplitude, where topk's order is arbitrary: compare full windows only.
    actual = CausalFAN(window, top_k)(x)
    torch.testing.assert_close(actual[:, window - 1 :], expected[:, window - 1 :], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_kth_largest_equals_topk_with_ties(k: int) -> None:
    values = torch.randint(0, 3, (5, 500)).float()  # many ties
    torch.testing.assert_close(kth_largest(values, k), values.topk(k, dim=0).values[-1])


def test_temporal_encoder_state_up_to_a_step_ignores_every_later_step() -> None:
    torch.manual_seed(0)
    encoder = TemporalEncoder(8)
    x, mask = torch.randn(4, 10, 8), torch.ones(4, 10, dtype=torch.bool)
    states = encoder(x, mask)
    for t in range(9):
        changed, changed_mask = x.clone(), mask.clone()
        changed[:, t + 1 :] = torch.randn(4, 9 - t, 8)
        changed_mask[:2, t + 1 :] = False
        torch.testing.assert_close(encoder(changed, changed_mask)[:, : t + 1], states[:, : t + 1])


@pytest.mark.parametrize("name", MODELS)
def test_values_at_missing_steps_are_ignored_and_non_finite_inputs_do_not_propagate(name: str) -> None:
    model = build(name).eval()
    batch = make_batch()
    scores = model(*batch.inputs())
    batch.x[0, :3] = torch.randn(3, WIDTH) * 5  # x_mask is False there
    torch.testing.assert_close(model(*batch.inputs()), scores)
    batch.x[0, :3] = torch.tensor(float("nan"))
    torch.testing.assert_close(model(*batch.inputs()), scores)
    batch.x[1, -1, 0] = torch.tensor(float("inf"))
    assert torch.isfinite(model(*batch.inputs())).all()


def test_graph_attention_gets_no_self_loops_and_adds_exactly_one_per_node() -> None:
    model = build("atft_gat_fan").eval()
    batch = make_batch()
    seen = []
    model.graph_layers[0].register_forward_pre_hook(lambda module, args: seen.append(args))
    model(*batch.inputs())
    h, edge_index, edge_attr = seen[0]
    assert not (edge_index[0] == edge_index[1]).any()
    _, (attended, _) = model.graph_layers[0](h, edge_index, edge_attr, return_attention_weights=True)
    loops = attended[0] == attended[1]
    n = batch.x.shape[0]
    assert int(loops.sum()) == n and torch.equal(attended[0, loops].sort().values, torch.arange(n))
    assert attended.shape[1] == edge_index.shape[1] + n


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = build(name).train()
    scores = model(*make_batch().inputs())
    (scores * torch.randn_like(scores)).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


@pytest.mark.parametrize("name", MODELS)
def test_score_spread_is_not_squashed_and_scales_with_the_head(name: str) -> None:
    model = build(name).eval()
    batch = make_batch()
    scores = model(*batch.inputs())
    assert scores.std(0).min() > 1e-2
    with torch.no_grad():
        model.head.weight.mul_(2)
        model.head.bias.mul_(2)
    doubled = model(*batch.inputs())
    torch.testing.assert_close(doubled, 2 * scores)
    torch.testing.assert_close(doubled.std(0), 2 * scores.std(0))


@pytest.mark.parametrize("name", MODELS)
def test_input_scaling_is_saved_with_the_weights_and_changes_scores(name: str) -> None:
    model = build(name).eval()
    batch = make_batch()
    state = model.state_dict()
    assert torch.equal(state["input_mean"], torch.zeros(WIDTH)) and torch.equal(state["input_std"], torch.ones(WIDTH))
    before = model(*batch.inputs())
    model.set_input_scaling(torch.linspace(-1, 1, WIDTH), torch.tensor([2.0, 0.5, 1.0, 3.0, 0.0, 1.0]))
    after = model(*batch.inputs())
    assert not torch.allclose(after, before)
    assert model.input_std[4] == STD_FLOOR
    restored = build(name, seed=1).eval()
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored(*batch.inputs()), after)
    with pytest.raises(InputWidthError):
        model.set_input_scaling(torch.zeros(WIDTH + 1), torch.ones(WIDTH + 1))


@pytest.mark.parametrize("name", MODELS)
def test_input_clip_bounds_the_scaled_inputs_and_leaves_missing_values_missing(name: str) -> None:
    model = build(name, input_clip=3.0).eval()
    batch = make_batch()
    x = batch.x.clone()
    x[1, -1, 0], x[2, -1, 1], x[3, -1, 2] = 250.0, -40.0, float("inf")
    scaled = model.prepare_inputs(x, batch.x_mask)
    assert scaled[1, -1, 0] == 3.0 and scaled[2, -1, 1] == -3.0 and scaled[3, -1, 2] == 0.0
    within = x.abs() < 3.0
    torch.testing.assert_close(scaled[within], build(name).prepare_inputs(x, batch.x_mask)[within])
    x[1, -1, 0] = 3.5  # any value past the clip scores as the clip itself
    torch.testing.assert_close(model(x, *batch.inputs()[1:])[1], model(scaled, *batch.inputs()[1:])[1])


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_weights_same_scores(name: str) -> None:
    first, second = build(name, seed=3).eval(), build(name, seed=3).eval()
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    batch = make_batch()
    assert torch.equal(first(*batch.inputs()), second(*batch.inputs()))


def test_chunking_stocks_changes_no_score(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("atft_gat_fan").eval()
    batch = make_batch()
    whole = model(*batch.inputs())
    monkeypatch.setattr(atft_gat_fan, "CHUNK_ELEMENTS", 1)  # one stock per chunk
    torch.testing.assert_close(model(*batch.inputs()), whole)


def _activated(context: DayContextFiLM) -> DayContextFiLM:
    # DayContextFiLM starts near the identity; full-size random FiLM weights make the day context change scores.
    with torch.no_grad():
        context.film.weight.normal_()
    return context


def _film_active(model):
    _activated(model.day_context)
    return model


def test_day_context_uses_the_days_present_stocks_only() -> None:
    model = _film_active(build("atft_gat_fan")).eval()
    batch = make_batch((5, 7))
    batch.x_mask[3] = False  # row 3 is absent that day: it has no row, and so no edges
    keep = (batch.edge_index != 3).all(0)
    batch.edge_index, batch.edge_attr = batch.edge_index[:, keep], batch.edge_attr[keep]
    scores = model(*batch.inputs())
    rows = torch.tensor([0, 1, 2, 4])  # day 0 alone, without the absent row and without day 1
    remap = torch.full((batch.x.shape[0],), -1).index_put_((rows,), torch.arange(4))
    alone = (remap[batch.edge_index] >= 0).all(0)
    torch.testing.assert_close(
        model(batch.x[rows], batch.x_mask[rows], remap[batch.edge_index[:, alone]], batch.edge_attr[alone],
              torch.zeros(4, dtype=torch.long)),
        scores[rows],
    )  # fmt: skip


def test_day_context_carries_the_cross_section_to_every_stock() -> None:
    model = _film_active(build("atft_gat_fan")).eval()
    batch = make_batch((6,))
    batch.edge_index, batch.edge_attr = batch.edge_index[:, :0], batch.edge_attr[:0]  # no graph: context only
    scores = model(*batch.inputs())
    batch.x[5] += 3.0
    changed = model(*batch.inputs())
    assert not torch.allclose(changed[:5], scores[:5])


def test_day_context_reads_the_inputs_market_state_not_only_the_embeddings() -> None:
    torch.manual_seed(0)
    film = _activated(DayContextFiLM(width=3, hidden=4))
    h, x = torch.randn(5, 2, 4), torch.randn(5, 2, 3)
    day, present = torch.zeros(5, dtype=torch.long), torch.ones(5, 2, dtype=torch.bool)
    calm = film(h, x, day, present)
    rally = x.clone()
    rally[..., 0] += 2.0  # a market-level input, the same shift for every stock; the embeddings are unchanged
    assert not torch.allclose(film(h, rally, day, present), calm)


def test_day_context_at_a_step_ignores_every_later_step() -> None:
    torch.manual_seed(0)
    film = _activated(DayContextFiLM(width=3, hidden=4))
    h, x = torch.randn(6, 5, 4), torch.randn(6, 5, 3)
    day, present = torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(6, 5, dtype=torch.bool)
    before = film(h, x, day, present)
    h[:, 3:] += 5.0
    x[:, 3:] -= 5.0
    torch.testing.assert_close(film(h, x, day, present)[:, :3], before[:, :3])


@pytest.mark.parametrize("name", MODELS)
def test_describe_is_json_and_names_the_contract(name: str) -> None:
    summary = json.loads(json.dumps(build(name).describe()))
    assert summary["model"] == name and summary["width"] == WIDTH and summary["horizons"] == HORIZONS
    assert summary["manifest_sha256"] == SHA and summary["config"]["lookback"] == LOOKBACK


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("atft_gat_fan", {"gat_heads": 3}, "gat_heads"),
        ("atft_gat_fan", {"fan_top_k": 4}, "fan_top_k"),
        ("apex", {"attention_heads": 3}, "attention_heads"),
        ("apex", {"patch_len": LOOKBACK + 1}, "patch_len"),
    ],
)
def test_inconsistent_configs_are_refused_at_build(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name, **overrides)
