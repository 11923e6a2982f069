"""Convective adjustment: analytic mixes, conservation, stability, numpy = torch, the constraint, the measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from xoceandiff.constraints import (
    CONSTRAINTS,
    BorderZero,
    ConstraintContext,
    ConvectiveAdjustment,
    StableStratification,
    get_constraints,
)
from xoceandiff.convection import (
    adjust_columns,
    adjust_columns_torch,
    adjustment_distance,
    convective_adjustment,
    stable_blend_torch,
    stable_level_shift_torch,
)
from xoceandiff.eos import potential_density
from xoceandiff.errors import ConstraintError, InvalidDataError, MissingVariableError
from xoceandiff.layout import Layout

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = ("teos10-poly", "eos80-poly", "seos")


def _random_columns(seed: int = 0, n: int = 400, nz: int = 30):
    """Strongly unstable random columns, with land (volume 0, NaN values) at the bottom of some."""
    rng = np.random.default_rng(seed)
    temperature = rng.normal(10.0, 6.0, (n, nz))
    salinity = rng.normal(35.0, 0.6, (n, nz))
    volume = rng.uniform(1.0, 50.0, (n, nz)) * rng.uniform(1e8, 1e10, (n, 1))
    depth_of_bottom = rng.integers(1, nz + 1, n)
    land = np.arange(nz)[None, :] >= depth_of_bottom[:, None]
    volume[land] = 0.0
    temperature[land] = np.nan
    salinity[land] = np.nan
    return temperature, salinity, volume, ~land


def _steps(temperature, salinity, ocean, eos="teos10-poly"):
    """Density increase from each ocean cell to the ocean cell below (NaN where either is land)."""
    rho = potential_density(temperature, salinity, eos=eos)
    step = np.diff(rho, axis=-1)
    return np.where(ocean[..., 1:] & ocean[..., :-1], step, np.nan)


# --- the numpy scan -------------------------------------------------------------------------------


def test_two_equal_cells_take_their_mean():
    t, s = adjust_columns(np.array([2.0, 10.0]), np.array([34.0, 35.0]), np.array([3.0, 3.0]))
    np.testing.assert_allclose(t, [6.0, 6.0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(s, [34.5, 34.5], rtol=0, atol=1e-14)
    # unequal volumes: the volume-weighted mean
    t, s = adjust_columns(np.array([2.0, 10.0]), np.array([35.0, 35.0]), np.array([1.0, 3.0]))
    np.testing.assert_allclose(t, [8.0, 8.0], rtol=0, atol=1e-14)


def test_the_mixed_layer_grows_upward_while_unstable():
    # 5 over 12 is unstable: both become 8.5; then 8 over 8.5 is denser above, so all three mix
    t, _ = adjust_columns(np.array([8.0, 5.0, 12.0]), np.full(3, 35.0), np.ones(3))
    np.testing.assert_allclose(t, [25.0 / 3] * 3, rtol=0, atol=1e-13)
    # 9 over 8.5 is stable: only the two lower cells mix
    t, _ = adjust_columns(np.array([9.0, 5.0, 12.0]), np.full(3, 35.0), np.ones(3))
    np.testing.assert_allclose(t, [9.0, 8.5, 8.5], rtol=0, atol=1e-13)
    # and downward: the mix of the top two is denser than the third too
    t, _ = adjust_columns(np.array([1.0, 9.0, 6.0, 3.0]), np.full(4, 35.0), np.ones(4))
    np.testing.assert_allclose(t, [16.0 / 3] * 3 + [3.0], rtol=0, atol=1e-13)


@pytest.mark.parametrize("eos", EOS)
def test_random_columns_conserve_heat_and_salt_and_end_stable(eos):
    temperature, salinity, volume, ocean = _random_columns()
    assert (np.nan_to_num(_steps(temperature, salinity, ocean, eos), nan=1.0) < 0).sum() > 1000
    t, s = adjust_columns(temperature, salinity, volume, eos=eos)
    for before, after in ((temperature, t), (salinity, s)):
        total0 = np.nansum(volume * before, axis=-1)
        total1 = np.nansum(volume * after, axis=-1)
        np.testing.assert_allclose(total1, total0, rtol=1e-10, atol=0)
    steps = _steps(t, s, ocean, eos)
    assert np.nanmin(steps) >= 0.0
    # land untouched (NaN stays NaN)
    assert np.isnan(t[~ocean]).all() and np.isnan(s[~ocean]).all()
    assert np.isfinite(t[ocean]).all()


def test_stable_columns_are_returned_bit_for_bit():
    rng = np.random.default_rng(3)
    temperature = -np.sort(-rng.uniform(0.0, 25.0, (50, 20)), axis=-1)  # warm above cold
    salinity = np.sort(rng.uniform(34.0, 36.0, (50, 20)), axis=-1)  # fresh above salty
    volume = rng.uniform(1.0, 2.0, (50, 20))
    t, s = adjust_columns(temperature, salinity, volume)
    assert np.array_equal(t, temperature) and np.array_equal(s, salinity)
    # one unstable column among stable ones: only it changes
    temperature[7, 3] = temperature[7, 4] - 5.0
    t, s = adjust_columns(temperature, salinity, volume)
    changed = np.flatnonzero((t != temperature).any(axis=-1))
    assert changed.tolist() == [7]


def test_depth_axis_and_float32_inputs():
    temperature, salinity, volume, ocean = _random_columns(seed=5, n=60, nz=12)
    expected = adjust_columns(temperature, salinity, volume)
    # (z, y, x): depth first
    t3 = temperature.T.reshape(12, 6, 10)
    s3 = salinity.T.reshape(12, 6, 10)
    t, s = adjust_columns(t3, s3, volume.T.reshape(12, 6, 10), axis=0)
    np.testing.assert_array_equal(t.reshape(12, 60).T, expected[0])
    np.testing.assert_array_equal(s.reshape(12, 60).T, expected[1])
    # float32 in, float32 out
    t32, _ = adjust_columns(temperature.astype(np.float32), salinity.astype(np.float32), volume)
    assert t32.dtype == np.float32
    with pytest.raises(InvalidDataError, match="auto"):
        adjust_columns(temperature, salinity, volume, eos="auto")
    with pytest.raises(InvalidDataError, match="broadcast"):
        adjust_columns(temperature, salinity, volume[:, :3])


def test_margin_makes_mixed_layers_stable_by_margin_and_keeps_salt():
    temperature, salinity, volume, ocean = _random_columns(seed=2)
    margin = 1e-3
    t, s = adjust_columns(temperature, salinity, volume, margin=margin)
    np.testing.assert_allclose(np.nansum(volume * s, -1), np.nansum(volume * salinity, -1), rtol=1e-10)
    np.testing.assert_allclose(np.nansum(volume * t, -1), np.nansum(volume * temperature, -1), rtol=1e-10)
    touched = (t != temperature) | (s != salinity)
    steps = _steps(t, s, ocean)
    touching = touched[:, 1:] | touched[:, :-1]
    # every interface a mixed layer touches is stable by the margin (to the EOS's curvature)
    assert np.nanmin(np.where(touching, steps, np.inf)) >= margin * (1 - 1e-3)
    assert np.nanmin(steps) >= 0.0


@pytest.mark.parametrize("eos", EOS)
def test_numpy_and_torch_agree(eos):
    temperature, salinity, volume, ocean = _random_columns(seed=1, n=6 * 7 * 2, nz=25)
    t, s = adjust_columns(temperature, salinity, volume, eos=eos, margin=1e-3)

    def to_torch(a):  # (B * H * W, L) -> (B, L, H, W)
        return torch.from_numpy(np.ascontiguousarray(a.reshape(2, 6, 7, 25).transpose(0, 3, 1, 2)))

    def to_numpy(a):
        return a.numpy().transpose(0, 2, 3, 1).reshape(-1, 25)

    tt, st = adjust_columns_torch(to_torch(temperature), to_torch(salinity), to_torch(volume), eos, margin=1e-3)
    np.testing.assert_allclose(to_numpy(tt), t, rtol=0, atol=1e-5)
    np.testing.assert_allclose(to_numpy(st), s, rtol=0, atol=1e-5)
    # float32 tensors and a (B, L, H, W) volume: float32 out, the numpy answer to float32 rounding
    t32, _ = adjust_columns_torch(to_torch(temperature).float(), to_torch(salinity).float(), to_torch(volume), eos)
    assert t32.dtype == torch.float32
    expected, _ = adjust_columns(temperature.astype(np.float32), salinity.astype(np.float32), volume, eos=eos)
    np.testing.assert_allclose(to_numpy(t32), expected, rtol=0, atol=1e-5)


# --- the constraint -------------------------------------------------------------------------------


@pytest.fixture
def dino(constraint_case):
    return constraint_case[0]


@pytest.fixture
def model(constraint_case):
    return constraint_case[1]


def _inverted(data: torch.Tensor, ctx: ConstraintContext, seed: int = 1) -> torch.Tensor:
    """The data with warm anomalies under 20 % of the cells (+1 degC over the level above), plus noise."""
    g = torch.Generator().manual_seed(seed)
    temperature = ctx.denormalise(data, "toce")
    warm = torch.rand(temperature.shape, generator=g, dtype=data.dtype) < 0.2
    warm[:, 0] = False
    inverted = temperature.clone()
    inverted[:, 1:] = torch.where(warm[:, 1:], temperature[:, :-1] + 1.0, temperature[:, 1:])
    x = data.clone()
    x[:, ctx.toce_channels] = (inverted - ctx.field_offset["toce"]) / ctx.field_scale["toce"]
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return BorderZero()(x, 0, ctx)


def _column_totals(x: torch.Tensor, ctx: ConstraintContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume integrals of T and S over the kept levels of each column, physical units, (B, H, W)."""
    volume = ctx.ops.volume
    return ((ctx.denormalise(x, "toce") * volume).sum(1), (ctx.denormalise(x, "soce") * volume).sum(1))


@pytest.mark.parametrize("margin", [1e-3, 0.0])
def test_the_constraint_leaves_no_unstable_interface_and_conserves_columns(dino, model, margin):
    layout, norm, ctx, data = model
    x = _inverted(data, ctx)
    count = StableStratification().unstable
    assert (count(x, ctx) > 500).all()
    constraint = ConvectiveAdjustment(margin=margin)
    assert constraint(x, 0, ctx) is x and constraint(x, 999, ctx) is x  # a final constraint only
    y = constraint.finish(x, ctx)
    if margin > 0:  # neutral layers (margin 0) may flip by rounding through the normalisation
        assert (count(y, ctx) == 0).all(), count(y, ctx)
    else:
        assert (count(y, ctx) < 0.02 * count(x, ctx)).all()
    for before, after in zip(_column_totals(x, ctx), _column_totals(y, ctx), strict=True):
        torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12 * float(before.abs().max()))
    assert torch.equal(y[:, ctx.channels["ssh"]], x[:, ctx.channels["ssh"]])
    assert torch.equal(y[:, ~ctx.ops.mask], x[:, ~ctx.ops.mask])
    # stable data stay exactly as they are... except the few interfaces that are unstable by rounding
    stable = data.clone()
    finished = constraint.finish(stable, ctx)
    assert float((finished - stable).abs().max()) < 1e-2


def test_the_constraint_in_float32_and_the_sampling_loop_protocol(dino, model):
    layout, norm, ctx, data = model
    ctx32 = ConstraintContext.from_model(dino, layout, norm)
    x = _inverted(data, ctx).float()
    (constraint,) = get_constraints("convective_adjustment", layout=layout)
    assert constraint.at_end and isinstance(constraint, ConvectiveAdjustment)
    assert CONSTRAINTS["convective_adjustment"] is ConvectiveAdjustment
    y = constraint.finish(x, ctx32)
    assert y.dtype == torch.float32
    # as the diagnostics count (float64 densities of the float32 values): none left
    rho = potential_density(ctx32.denormalise(y, "toce").double(), ctx32.denormalise(y, "soce").double())
    assert int(((rho[:, :-1] > rho[:, 1:]) & ctx.ops.interface_mask).sum()) == 0
    # in float32 arithmetic a few untouched pairs within one float32 ulp of neutral may count
    assert (StableStratification().unstable(y, ctx32) <= 0.01 * StableStratification().unstable(x, ctx32)).all()
    for before, after in zip(_column_totals(x.double(), ctx), _column_totals(y.double(), ctx), strict=True):
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))


def test_the_constraint_follows_the_context_salinity(dino, model):
    layout, norm, ctx, data = model
    practical = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64, salinity="practical")
    assert ConvectiveAdjustment().eos_for(practical) == "eos80-poly"
    assert ConvectiveAdjustment().eos_for(ctx) == "teos10-poly"
    assert ConvectiveAdjustment(eos="seos").eos_for(practical) == "seos"
    x = _inverted(data, ctx)
    y = ConvectiveAdjustment().finish(x, practical)
    assert (StableStratification(eos="eos80-poly").unstable(y, practical) == 0).all()
    with pytest.raises(ConstraintError, match="eos"):
        ConvectiveAdjustment(eos="linear")
    with pytest.raises(ConstraintError, match="margin"):
        ConvectiveAdjustment(margin=-1.0)
    with pytest.raises(ConstraintError, match="keeps 1 level"):
        ConvectiveAdjustment().check(Layout.from_dataset(dino, levels=[0]))


def test_stable_stratification_finish_is_bounded_in_physical_units(dino, model):
    """A pathological state (10-sigma noise) moves by at most 0.5 degC and 0.1 salinity per finishing step."""
    layout, norm, ctx, data = model
    g = torch.Generator().manual_seed(4)
    wild = data + 10.0 * torch.randn(data.shape, generator=g, dtype=data.dtype)
    wild = torch.where(ctx.ops.mask, wild, torch.zeros_like(wild))
    for iterations in (1, 50):
        constraint = StableStratification(final_iterations=iterations)
        finished = constraint.finish(wild, ctx)
        assert torch.isfinite(finished).all()
        dt = (ctx.denormalise(finished, "toce") - ctx.denormalise(wild, "toce")).abs().max()
        ds = (ctx.denormalise(finished, "soce") - ctx.denormalise(wild, "soce")).abs().max()
        assert float(dt) <= 0.5 * iterations + 1e-9
        assert float(ds) <= 0.1 * iterations + 1e-9
    salinity = ctx.denormalise(wild, "soce")[:, ctx.ops.level_mask]
    finished_salinity = ctx.denormalise(finished, "soce")[:, ctx.ops.level_mask]
    assert float(finished_salinity.max()) <= float(salinity.max()) + 5.0 + 1e-9  # never 70
    with pytest.raises(ConstraintError, match="positive"):
        StableStratification(max_step_soce=0.0)
    # a realistic isolated inversion (1 degC) still goes in one capped step
    x = data.clone()
    (south, _), (west, _) = layout.padding
    k, j, i = 5, south + 30, west + 8
    x[0, int(ctx.toce_channels[k + 1]), j, i] += 1.0 / ctx.field_scale["toce"][k + 1, 0, 0]
    y = StableStratification(final_iterations=1, margin=0.0).finish(x, ctx)
    rho = potential_density(ctx.denormalise(y, "toce")[0, k : k + 2, j, i], ctx.denormalise(y, "soce")[0, k : k + 2, j, i])
    assert float(rho[0] - rho[1]) < 1e-3


# --- the datasets front ends ----------------------------------------------------------------------


def _inverted_dataset(ds: xr.Dataset) -> xr.Dataset:
    """A copy with the top 12 levels upside down (cold, salty water on top) in half the records."""
    flipped = ds.copy()
    toce = ds.toce.values.copy()
    soce = ds.soce.values.copy()
    toce[::2, :12] = toce[::2, 11::-1]
    soce[::2, :12] = soce[::2, 11::-1]
    flipped["toce"] = ds.toce.copy(data=toce)
    flipped["soce"] = ds.soce.copy(data=soce)
    return flipped


def test_convective_adjustment_of_a_dataset_is_lazy_and_matches_the_columns(dino):
    inverted = _inverted_dataset(dino.compute()).chunk({"t": 1})
    out = convective_adjustment(inverted)
    assert out.toce.chunks is not None and out.toce.dims == dino.toce.dims
    assert out.toce.attrs["units"] == dino.toce.attrs["units"]
    assert "convective_adjustment" in out.attrs["history"].split("\n")[0]
    volume = (dino.e1t * dino.e2t * dino.e3t).where(dino.tmask, 0.0).transpose("z_c", "y_c", "x_c").values
    t, s = adjust_columns(inverted.toce.values, inverted.soce.values, volume, eos="teos10-poly", axis=1)
    np.testing.assert_array_equal(out.toce.values, t)
    np.testing.assert_array_equal(out.soce.values, s)
    with pytest.raises(MissingVariableError, match="soce"):
        convective_adjustment(dino.drop_vars("soce"))


def test_adjustment_distance_is_zero_on_the_data_and_an_rms_on_an_inverted_copy(dino):
    distance = adjustment_distance(dino).compute()
    names = [f"convective_distance_{f}_{b}" for f in ("toce", "soce") for b in ("0-200m", "200-1000m", "below-1000m")]
    assert sorted(distance.data_vars) == sorted(names)
    assert distance["convective_distance_toce_0-200m"].dims == ("t",)
    assert distance["convective_distance_toce_0-200m"].attrs["units"] == "degC"
    assert distance["convective_distance_soce_0-200m"].attrs["units"] == "g kg-1"
    for name in names:
        assert float(distance[name].max()) < 5e-3, name  # stable by construction, up to float32 rounding

    inverted = _inverted_dataset(dino.compute())
    distance = adjustment_distance(inverted).compute()
    # independent: numpy columns, numpy masks from the T depths, numpy RMS
    volume = (dino.e1t * dino.e2t * dino.e3t).where(dino.tmask, 0.0).transpose("z_c", "y_c", "x_c").values
    toce, soce = inverted.toce.values, inverted.soce.values  # float32, as the dataset holds them
    t, s = adjust_columns(toce, soce, volume, eos="teos10-poly", axis=1)
    depth = dino.gdept_1d.values[:, None, None]
    wet = dino.tmask.values
    bands = {"0-200m": wet & (depth < 200), "200-1000m": wet & (depth >= 200) & (depth < 1000),
             "below-1000m": wet & (depth >= 1000)}
    for field, before, after in (("toce", toce, t), ("soce", soce, s)):
        change = np.nan_to_num(after.astype(np.float64) - before.astype(np.float64))
        for band, mask in bands.items():
            w = np.where(mask, volume, 0.0)
            expected = np.sqrt((w * change**2).sum(axis=(1, 2, 3)) / w.sum())
            np.testing.assert_allclose(distance[f"convective_distance_{field}_{band}"].values, expected,
                                       rtol=1e-6, atol=1e-9)
    assert float(distance["convective_distance_toce_0-200m"][0]) > 0.1  # the flipped records move
    assert float(distance["convective_distance_toce_0-200m"][1]) < 5e-3  # the others do not


# --- the stable blend of boundary columns (border_zero_gradient's last step) -------------------------------


def test_stable_blend_moves_an_unstable_step_just_enough_analytically():
    """Linear EOS in S (seos, one temperature): the new step follows from rho = rho(T) + b0 S in closed form."""
    from xoceandiff.eos import SEOS_CONSTANTS

    b0, margin = SEOS_CONSTANTS["b0"], 1e-4
    t = torch.full((1, 3, 1, 1), 10.0, dtype=torch.float64)
    s = torch.tensor([35.0, 35.2, 35.1], dtype=torch.float64).reshape(1, 3, 1, 1)  # 35.2 over 35.1: unstable
    ref_s = torch.tensor([35.0, 35.05, 35.1], dtype=torch.float64).reshape(1, 3, 1, 1)
    new_t, new_s = stable_blend_torch(t, s, t, ref_s, torch.ones(2, 1, 1, dtype=torch.bool), "seos", margin=margin)
    # step(theta) = theta * 0.1 + (1 - theta) * (-0.05) must give rho_2 - rho_1 = -b0 step = margin
    step = -margin / b0
    expected = [35.1 + step - 0.2, 35.1 + step, 35.1]  # the level above keeps its own step (-0.2)
    np.testing.assert_allclose(new_s.flatten().numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(new_t, t)


def test_stable_blend_leaves_stable_and_excluded_columns_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    t = 10 + torch.randn(2, 6, 4, 5, generator=g)
    s = 35 + 0.1 * torch.randn(2, 6, 4, 5, generator=g)
    stable_t = torch.sort(t, dim=1, descending=True).values  # warm over cold, one salinity: stable
    one_s = torch.full_like(s, 35.0)
    where = torch.ones(5, 4, 5, dtype=torch.bool)
    new_t, new_s = stable_blend_torch(stable_t, one_s, t, s, where, "eos80-poly")
    assert torch.equal(new_t, stable_t) and torch.equal(new_s, one_s)
    new_t, new_s = stable_blend_torch(t, s, stable_t, one_s, torch.zeros_like(where), "eos80-poly")
    assert torch.equal(new_t, t) and torch.equal(new_s, s) and new_t.dtype == torch.float32


def test_stable_blend_leaves_no_unstable_interface_where_the_reference_is_stable():
    """Random unstable columns against stable references: every interface ends stable by about the margin or more,
    and the deepest level never moves (the rebuild starts there)."""
    g = torch.Generator().manual_seed(5)
    t = 10 + torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    s = 35 + 0.1 * torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    ref_t = torch.sort(t, dim=1, descending=True).values
    ref_s = torch.full_like(s, 35.0)
    margin = 1e-4
    new_t, new_s = stable_blend_torch(t, s, ref_t, ref_s, torch.ones(7, 6, 6, dtype=torch.bool), "eos80-poly",
                                      margin=margin)
    rho = potential_density(new_t, new_s, "eos80-poly")
    before = potential_density(t, s, "eos80-poly")
    was_unstable = (before[:, 1:] - before[:, :-1]) < 0
    assert was_unstable.float().mean() > 0.3
    assert float((rho[:, 1:] - rho[:, :-1]).min()) > 0.5 * margin
    assert torch.equal(new_t[:, -1], t[:, -1]) and torch.equal(new_s[:, -1], s[:, -1])


def test_stable_blend_mixes_the_interface_where_the_reference_is_unstable_too():
    """Linear EOS in S: where the reference's step is unstable as well, level k takes level k + 1's T and S."""
    t = torch.full((1, 3, 1, 1), 10.0, dtype=torch.float64)
    s = torch.tensor([35.0, 35.2, 35.1], dtype=torch.float64).reshape(1, 3, 1, 1)  # 35.2 over 35.1: unstable
    ref_s = torch.tensor([35.0, 35.3, 35.1], dtype=torch.float64).reshape(1, 3, 1, 1)  # unstable as well
    new_t, new_s = stable_blend_torch(t, s, t, ref_s, torch.ones(2, 1, 1, dtype=torch.bool), "seos")
    # level 1 mixed with level 2 (35.1), level 0 keeps its own step (-0.2) above it
    np.testing.assert_allclose(new_s.flatten().numpy(), [34.9, 35.1, 35.1], rtol=0, atol=1e-12)
    assert torch.equal(new_t, t)


def test_stable_blend_leaves_nothing_for_convection_whatever_the_reference():
    """Random unstable columns against random (mostly unstable) references: convective adjustment, the
    independent scan, finds nothing left to mix, and no interface is unstable."""
    g = torch.Generator().manual_seed(7)
    t = 10 + torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    s = 35 + 0.1 * torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    ref_t = 10 + torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    ref_s = 35 + 0.1 * torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=g)
    ref_rho = potential_density(ref_t, ref_s, "eos80-poly")
    assert float(((ref_rho[:, 1:] - ref_rho[:, :-1]) < 0).double().mean()) > 0.3
    new_t, new_s = stable_blend_torch(t, s, ref_t, ref_s, torch.ones(7, 6, 6, dtype=torch.bool), "eos80-poly")
    rho = potential_density(new_t, new_s, "eos80-poly")
    assert float((rho[:, 1:] - rho[:, :-1]).min()) >= 0
    volume = torch.ones(8, 6, 6, dtype=torch.float64)
    mixed_t, mixed_s = adjust_columns_torch(new_t, new_s, volume, "eos80-poly")
    assert torch.equal(mixed_t, new_t) and torch.equal(mixed_s, new_s)


# --- the stable level shift (zero_mean's) -------------------------------------------------------------------


def test_stable_level_shift_gives_a_weak_column_just_its_room_analytically():
    """seos at one temperature is linear in S (rho = rho(T) + b0 S_a): the weak column's share is closed-form."""
    from xoceandiff.eos import SEOS_CONSTANTS

    b0, margin, shift = SEOS_CONSTANTS["b0"], 1e-4, 0.01
    t = torch.full((1, 2, 1, 2), 10.0, dtype=torch.float64)
    s = torch.tensor([[35.0, 35.0], [35.001, 35.5]], dtype=torch.float64).reshape(1, 2, 1, 2)
    weight, mask = torch.full((2, 1, 2), 0.5, dtype=torch.float64), torch.ones(2, 1, 2, dtype=torch.bool)
    shifts = torch.tensor([[shift, 0.0]], dtype=torch.float64)  # saltier top: denser over the cell below
    new_t, new_s = stable_level_shift_torch(t, s, torch.zeros_like(shifts), shifts, weight, mask, "seos",
                                            margin=margin)
    w_weak = (b0 * 0.001 - margin) / (b0 * shift)  # the step b0 * 0.001 kept down to the margin
    expected = [35.0 + w_weak * shift, 35.0 + (2 - w_weak) * shift, 35.001, 35.5]
    np.testing.assert_allclose(new_s.flatten().numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(new_t, t)
    rho = potential_density(new_t, new_s, "seos")
    assert float(rho[0, 1, 0, 0] - rho[0, 0, 0, 0]) == pytest.approx(margin, abs=1e-12)


def test_stable_level_shift_is_the_uniform_shift_where_every_column_has_room():
    g = torch.Generator().manual_seed(7)
    steps = 0.5 + torch.rand(2, 6, 4, 5, dtype=torch.float64, generator=g)  # 0.5 to 1.5 degC per level
    t = 20 - torch.cumsum(steps, dim=1)
    s = torch.full_like(t, 35.0)
    weight = torch.rand(6, 4, 5, dtype=torch.float64, generator=g)
    weight = weight / weight.sum((-2, -1), keepdim=True)
    shift_t = 1e-3 * torch.randn(2, 6, dtype=torch.float64, generator=g)
    shift_s = 1e-4 * torch.randn(2, 6, dtype=torch.float64, generator=g)
    new_t, new_s = stable_level_shift_torch(t, s, shift_t, shift_s, weight, torch.ones(6, 4, 5, dtype=torch.bool),
                                            "eos80-poly")
    torch.testing.assert_close(new_t, t + shift_t[..., None, None], rtol=0, atol=1e-12)
    torch.testing.assert_close(new_s, s + shift_s[..., None, None], rtol=0, atol=1e-12)


@pytest.mark.parametrize("eos", EOS)
def test_stable_level_shift_keeps_level_means_and_stable_interfaces(eos):
    """Random columns, some nearly mixed, with a sea floor at random depths: every level's weighted mean moves by
    exactly its shift (numpy oracle), no interface stable by the margin ends less stable than it, and none weaker
    loses stability (to the linearisation's second order), while the uniform shift breaks hundreds."""
    rng = np.random.default_rng(11)
    batch, levels, ny, nx, margin = 3, 10, 8, 9, 1e-3
    steps = rng.exponential(0.3, (batch, levels, ny, nx)) * (rng.random((batch, 1, ny, nx)) < 0.6)  # 40 % mixed
    temperature = 20 - np.cumsum(steps, axis=1) + 1e-4 * rng.standard_normal((batch, levels, ny, nx))
    salinity = 35 + 0.01 * rng.standard_normal((batch, levels, ny, nx))
    bottom = rng.integers(3, levels + 1, (ny, nx))
    mask = np.arange(levels)[:, None, None] < bottom
    area = rng.uniform(0.5, 2.0, (ny, nx))
    weight = np.where(mask, area, 0.0)
    weight = weight / weight.sum(axis=(-2, -1), keepdims=True)
    shift_t = rng.normal(0, 0.05, (batch, levels))
    shift_s = rng.normal(0, 0.01, (batch, levels))
    as_tensor = torch.from_numpy
    new_t, new_s = stable_level_shift_torch(as_tensor(temperature), as_tensor(salinity), as_tensor(shift_t),
                                            as_tensor(shift_s), as_tensor(weight), as_tensor(mask), eos, margin=margin)
    new_t, new_s = new_t.numpy(), new_s.numpy()
    for new, old, shift in ((new_t, temperature, shift_t), (new_s, salinity, shift_s)):
        moved = (weight * new).sum(axis=(-2, -1)) - (weight * old).sum(axis=(-2, -1))
        np.testing.assert_allclose(moved, shift, rtol=0, atol=1e-10)
        assert np.array_equal(new[:, ~mask], old[:, ~mask])

    def step(t, s):
        rho = potential_density(t, s, eos)
        return np.where(mask[1:] & mask[:-1], rho[:, 1:] - rho[:, :-1], np.inf)

    before, after = step(temperature, salinity), step(new_t, new_s)
    uniform = step(temperature + shift_t[..., None, None], salinity + shift_s[..., None, None])
    interfaces = np.isfinite(before)
    assert ((before >= 0) & (uniform < 0)).sum() > 100  # what the uniform shift does to these columns
    tolerance = 0.1 * margin  # the caps are linear in the EOS: its curvature moves a step by a few 1e-5
    kept = before >= margin
    assert (after[kept] >= margin - tolerance).mean() > 0.99  # the rest: levels short of room, taken to neutral
    assert (after[interfaces & (before >= 0)] >= -tolerance).all()  # no stable interface turns unstable
    unstable = interfaces & (before < 0)
    assert (after[unstable] >= before[unstable] - tolerance).all()  # nor an unstable one more so
