"""The sampling constraints, against xgcm, analytic answers and an independent density count."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from xoceandiff.constraints import (
    ALIASES,
    CONSTRAINTS,
    BorderZero,
    BorderZeroGradient,
    Constraint,
    ConstraintContext,
    FunctionConstraint,
    GradientZeroMean,
    KappaSchedule,
    StableStratification,
    ZeroMean,
    get_constraints,
    make_kappa,
)
from xoceandiff.eos import potential_density
from xoceandiff.errors import ConstraintError
from xoceandiff.grid import build_grid
from xoceandiff.layout import Layout, to_tensor
from xoceandiff.normalisation import Normaliser, normalise, statistics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def dino(constraint_case):
    return constraint_case[0]


@pytest.fixture
def model(constraint_case):
    return constraint_case[1]


def _noisy(data: torch.Tensor, ctx: ConstraintContext, scale: float = 0.3, seed: int = 0):
    """The data plus noise everywhere (land and padding included), as after a scheduler step."""
    g = torch.Generator().manual_seed(seed)
    return data + scale * torch.randn(data.shape, generator=g, dtype=data.dtype) + 0.2


def _fields(x: torch.Tensor, ctx: ConstraintContext) -> xr.DataArray:
    """The de-padded tensor as a DataArray on the grid's dimensions."""
    return xr.DataArray(ctx.ops.unpad(x).numpy(), dims=("b", "c", "y_c", "x_c"))


# --- zero mean ------------------------------------------------------------------------------------


def test_zero_mean_sets_the_area_weighted_ocean_means(dino, model):
    layout, norm, ctx, data = model
    x = _noisy(data, ctx)
    y = ZeroMean(stable=True)(x, 999, ctx)
    torch.testing.assert_close(ZeroMean()(x, 0, ctx), y, rtol=0, atol=0)  # "end": the same at timestep 0
    torch.testing.assert_close(ZeroMean()(x, 999, ctx), ZeroMean(stable=False)(x, 999, ctx), rtol=0, atol=0)
    grid = build_grid(dino)
    mask = xr.DataArray(ctx.ops.unpad(ctx.ops.mask).numpy(), dims=("c", "y_c", "x_c"))
    da = _fields(y, ctx).assign_coords(e1t=dino.e1t, e2t=dino.e2t)
    means = grid.average(da.where(mask), ["X", "Y"]).transpose("b", "c").values
    assert np.abs(means - ctx.target.numpy()).max() <= 1e-5
    assert float(ctx.target.abs().max()) == 0.0  # 3-std: the offsets are the means
    # land and padding untouched
    off = ~ctx.ops.mask
    assert torch.equal(y[:, off], x[:, off])
    # float32 context: the means to 1e-5; the values to 5e-4 (the stable shift's caps follow density steps,
    # which the float32 inputs round: 0.12 % of the cells move by more than 1e-5, at most 1.3e-4), or to 1e-5
    # with the uniform shift
    ctx32 = ConstraintContext.from_model(dino, layout, norm)
    y32 = ZeroMean(stable=True)(x.float(), 999, ctx32)
    assert float(ctx32.ops.average_xy(y32).abs().max()) <= 1e-5
    torch.testing.assert_close(y32.double(), y, atol=5e-4, rtol=0)
    assert float(((y32.double() - y).abs() > 1e-5).double().mean()) < 2e-3
    uniform32 = ZeroMean(stable=False)(x.float(), 999, ctx32)
    torch.testing.assert_close(uniform32.double(), ZeroMean(stable=False)(x, 999, ctx), atol=1e-5, rtol=0)


def test_zero_mean_targets_the_training_means_with_min_max(dino):
    layout = Layout.from_dataset(dino)
    stats = statistics(dino, weighted=True)
    norm = Normaliser.from_statistics(stats, scheme="min-max")
    x = to_tensor(normalise(dino, norm), layout).double() + 0.1
    no_means = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64)
    assert no_means.target is None
    with pytest.raises(ConstraintError, match="means="):
        ZeroMean()(x, 0, no_means)
    ctx = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64, means=stats)
    y = ZeroMean()(x, 0, ctx)
    # in physical units, each level's area-weighted ocean mean is the training mean
    physical = ctx.ops.average_xy(ctx.denormalise(y))
    stats = stats.compute()
    expected = np.concatenate(
        [stats.toce_mean.values[list(layout.levels)], stats.soce_mean.values[list(layout.levels)],
         [float(stats.ssh_mean)]]
    )
    np.testing.assert_allclose(physical.numpy(), np.broadcast_to(expected, physical.shape), rtol=1e-9)


def _count_inversions(x: torch.Tensor, ctx: ConstraintContext) -> int:
    rho = potential_density(ctx.denormalise(x, "toce"), ctx.denormalise(x, "soce"))
    return int(((rho[:, :-1] > rho[:, 1:]) & ctx.ops.interface_mask).sum())


def test_zero_mean_keeps_mixed_columns_mixed_where_the_uniform_shift_breaks_them(model):
    """Half the columns mixed over the top 6 levels, the others warmed near the surface: the paper's uniform shift
    cools the mixed columns' top more than below (hundreds of inversions); the stable shift takes the cooling from
    the stratified columns and leaves every mixed column neutral, with the same level means."""
    layout, norm, ctx, data = model
    temperature, salinity = ctx.denormalise(data, "toce"), ctx.denormalise(data, "soce")
    g = torch.Generator().manual_seed(2)
    mixed = torch.rand(temperature.shape[-2:], generator=g) < 0.5
    top = 6
    for field in (temperature, salinity):
        field[:, 1:top] = torch.where(mixed, field[:, :1], field[:, 1:top])
    x = data.clone()
    x[:, ctx.soce_channels] = (salinity - ctx.field_offset["soce"]) / ctx.field_scale["soce"]
    x[:, ctx.toce_channels] = (temperature - ctx.field_offset["toce"]) / ctx.field_scale["toce"]
    x = torch.where(ctx.ops.mask, x, data)
    ctx = replace(ctx, target=ctx.ops.average_xy(x))  # these states' own level means are the target
    warming = torch.linspace(0.5, 0.0, top, dtype=torch.float64)[:, None, None]
    x[:, ctx.toce_channels[:top]] += torch.where(~mixed & ctx.ops.mask[ctx.toce_channels[:top]], warming, 0.0) / (
        ctx.field_scale["toce"][:top])
    uniform, stable = ZeroMean(stable=False)(x, 0, ctx), ZeroMean()(x, 0, ctx)
    excess = ctx.ops.average_xy(x) - ctx.target
    torch.testing.assert_close(uniform, x - excess[..., None, None] * ctx.ops.mask, rtol=0, atol=1e-12)
    for y in (uniform, stable):
        assert float((ctx.ops.average_xy(y) - ctx.target).abs().max()) < 1e-10
    before = _count_inversions(x, ctx)
    assert _count_inversions(uniform, ctx) > before + 100
    assert _count_inversions(stable, ctx) <= before
    new_t = ctx.denormalise(stable, "toce")
    ocean = ctx.ops.mask[ctx.toce_channels][1:top]
    column_step = (new_t[:, 1:top] - new_t[:, :1])[:, ocean & mixed]
    assert float(column_step.abs().max()) < 1e-9  # still one mixed layer
    assert torch.equal(stable[:, ~ctx.ops.mask], x[:, ~ctx.ops.mask])
    assert torch.equal(stable[:, ctx.channels["ssh"]], uniform[:, ctx.channels["ssh"]])
    cooled = (ctx.denormalise(stable, "toce") - ctx.denormalise(x, "toce"))[:, 0]
    assert float(cooled[:, mixed].abs().max()) < 1e-12  # the cooling comes from the columns that were warmed
    with pytest.raises(ConstraintError, match="max_factor"):
        ZeroMean(max_factor=0.5)
    with pytest.raises(ConstraintError, match="stable"):
        ZeroMean(stable="always")


def test_gradient_zero_mean_shrinks_by_one_minus_kappa(model):
    layout, norm, ctx, data = model
    x = _noisy(data, ctx)
    before = ctx.ops.average_xy(x) - ctx.target
    constraint = GradientZeroMean()
    for t in (999, 500, 50, 3, 0):
        kappa = 0.001 + 0.04 * np.exp(-t / 50)
        after = ctx.ops.average_xy(constraint(x, t, ctx)) - ctx.target
        np.testing.assert_allclose(after.numpy(), (1 - kappa) * before.numpy(), rtol=1e-10)
        # a tensor timestep, as diffusers gives them, does the same
        after_t = ctx.ops.average_xy(constraint(x, torch.tensor(t), ctx)) - ctx.target
        np.testing.assert_allclose(after_t.numpy(), (1 - kappa) * before.numpy(), rtol=1e-6)
    # configurable schedules: a constant, a triple, a callable
    for kappa, t, expected in ((0.5, 10, 0.5), ((0.0, 1.0, 10.0), 10, np.exp(-1)), (lambda t: 0.25, 7, 0.25)):
        after = ctx.ops.average_xy(GradientZeroMean(kappa)(x, t, ctx)) - ctx.target
        np.testing.assert_allclose(after.numpy(), (1 - expected) * before.numpy(), rtol=1e-10)


def test_gradient_zero_mean_reference_averages_the_padded_plane(model):
    layout, norm, ctx, data = model
    x = _noisy(data, ctx)
    y = GradientZeroMean(reference=True)(x, 0, ctx)
    before = x.mean(dim=(-2, -1))
    np.testing.assert_allclose(y.mean(dim=(-2, -1)).numpy(), (1 - 0.041) * before.numpy(), rtol=1e-10)
    # every cell, padding included, moves by the same amount
    shift = (x - y)[..., 0, 0]
    torch.testing.assert_close(x - y, shift[..., None, None].expand_as(x))


# --- borders --------------------------------------------------------------------------------------


def test_border_zero(model):
    layout, norm, ctx, data = model
    x = _noisy(data, ctx)
    x[0, 3, 0, 0] = float("nan")  # even garbage on the padding becomes 0
    y = BorderZero()(x, 500, ctx)
    off = ~ctx.ops.mask
    assert (y[:, off] == 0).all()
    assert torch.equal(y[:, ctx.ops.mask], x[:, ctx.ops.mask])
    assert BorderZero.at_end


def _boundary_faces(mask: np.ndarray, axis: str, periodic: bool):
    """Independent oracle: the faces (cell, neighbour) a zero-gradient boundary should close.

    Returns (cells, faces): the boundary cells and, for each, the index of the face (as xgcm's
    right-shifted ``diff`` numbers them) between the cell and its interior neighbour.
    """
    ny, nx = mask.shape

    def ocean(j: int, i: int) -> bool:
        if not 0 <= j < ny:
            return False
        if periodic:
            i %= nx
        elif not 0 <= i < nx:
            return False
        return bool(mask[j, i])

    cells, faces = [], []
    for j, i in zip(*np.nonzero(mask), strict=True):
        if axis == "Y":
            before, after = ocean(j - 1, i), ocean(j + 1, i)
            face_after, face_before = (j, i), (j - 1, i)
        else:
            before, after = ocean(j, i - 1), ocean(j, i + 1)
            face_after, face_before = (j, i), (j, (i - 1) % nx)
        if before and not after:
            cells.append((j, i))
            faces.append(face_before)
        elif after and not before:
            cells.append((j, i))
            faces.append(face_after)
    return cells, faces


@pytest.mark.parametrize("iperio", [1, 0], ids=["periodic", "walls"])
def test_border_zero_gradient_closes_every_boundary_face(dino, iperio):
    ds = dino.assign_attrs(Iperio=iperio)
    layout = Layout.from_dataset(ds)
    norm = Normaliser.from_statistics(statistics(ds), scheme="3-std")
    ctx = ConstraintContext.from_model(ds, layout, norm, dtype=torch.float64)
    grid = build_grid(ds)
    x = torch.randn((2, layout.channels, *layout.shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = BorderZeroGradient()(x, 0, ctx)
    da = _fields(y, ctx)
    dy = grid.diff(da, "Y").values
    dx = grid.diff(da, "X").values
    before, after = ctx.ops.unpad(x).numpy(), da.values
    masks = ctx.ops.unpad(ctx.ops.mask).numpy()
    conflicts = 0
    for c in range(layout.channels):
        ycells, yfaces = _boundary_faces(masks[c], "Y", periodic=False)
        xcells, xfaces = _boundary_faces(masks[c], "X", periodic=iperio == 1)
        # X faces: all exactly 0 (the X pass runs last)
        for j, i in xfaces:
            assert (dx[:, c, j, i] == 0).all(), (c, j, i)
        # Y faces: exactly 0, except where the X pass rewrote one of its cells after the Y pass
        xset = set(xcells)
        for (j, i), (fj, fi) in zip(ycells, yfaces, strict=True):
            other = (fj + 1, fi) if fj == j else (fj, fi)
            if (j, i) in xset or other in xset:
                if not (dy[:, c, fj, fi] == 0).all():
                    conflicts += 1
                continue
            assert (dy[:, c, fj, fi] == 0).all(), (c, j, i)
        # cells on no boundary, and land, are untouched
        untouched = np.ones(masks[c].shape, dtype=bool)
        for j, i in ycells + xcells:
            untouched[j, i] = False
        np.testing.assert_array_equal(after[:, c][:, untouched], before[:, c][:, untouched])
        assert len(ycells) > 0 and len(xcells) > 0
    if iperio == 1:
        assert conflicts == 0  # DINO's corners are all convex: both faces close
    else:
        # a walled copy opens the channel onto the domain edge: only the four channel-corner cells
        # of each wet channel (level) are boundary cells both ways with a Y neighbour that is not
        assert conflicts <= 4 * layout.channels


def test_border_zero_gradient_narrow_passages(dino):
    """1-cell passages are left alone; in a 2-cell passage the west cell copies the east one."""
    tmask = dino.tmask.values.copy()
    tmask[:, 20:31, 1:-1] = False  # a zonal wall ...
    tmask[:-1, 20:31, 5] = True  # ... with a 1-cell gap
    tmask[:-1, 20:31, 10:12] = True  # ... and a 2-cell gap
    ds = dino.assign_coords(tmask=(dino.tmask.dims, tmask))
    layout = Layout.from_dataset(ds)
    norm = Normaliser.from_statistics(statistics(dino), scheme="3-std")
    ctx = ConstraintContext.from_model(ds, layout, norm, dtype=torch.float64)
    x = torch.randn((1, layout.channels, *layout.shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = ctx.ops.unpad(x)[0, 0].numpy()
    after = ctx.ops.unpad(BorderZeroGradient()(x, 0, ctx))[0, 0].numpy()
    np.testing.assert_array_equal(after[22:29, 5], before[22:29, 5])  # 1-cell gap unchanged
    np.testing.assert_array_equal(after[22:29, 10], before[22:29, 11])  # west cell := east cell
    np.testing.assert_array_equal(after[22:29, 11], before[22:29, 11])  # east cell kept
    grid = build_grid(ds)
    dx = grid.diff(_fields(BorderZeroGradient()(x, 0, ctx), ctx), "X").values
    assert (dx[0, 0, 22:29, 10] == 0).all()


def test_border_zero_gradient_about_a_background_closes_the_anomaly_faces_and_keeps_the_background(dino):
    """With a background b (a model's per-cell training mean), b + anomaly -> b + Z(anomaly): the background
    itself passes unchanged, and xgcm's diff of the departure from b is 0 across every X boundary face."""
    layout = Layout.from_dataset(dino)
    norm = Normaliser.from_statistics(statistics(dino), scheme="3-std")
    plain = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    background = torch.randn((layout.channels, *layout.shape), generator=g, dtype=torch.float64)
    ctx = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64, background=background)
    torch.testing.assert_close(BorderZeroGradient()(background[None], 0, ctx), background[None], rtol=0, atol=0)
    anomaly = torch.randn((2, layout.channels, *layout.shape), generator=g, dtype=torch.float64)
    y = BorderZeroGradient()(background + anomaly, 0, ctx)
    torch.testing.assert_close(y - background, BorderZeroGradient()(anomaly, 0, plain), rtol=0, atol=1e-12)
    dx = build_grid(dino).diff(_fields(y - background, ctx), "X").values
    masks = ctx.ops.unpad(ctx.ops.mask).numpy()
    for c in (0, layout.channels - 1):
        _, xfaces = _boundary_faces(masks[c], "X", periodic=True)
        assert xfaces and all(abs(dx[:, c, j, i]).max() < 1e-12 for j, i in xfaces)
    # the plain rule would have moved the background's own boundary cells
    assert not torch.equal(BorderZeroGradient()(background[None], 0, plain), background[None])
    with pytest.raises(Exception, match="background: expected"):
        ConstraintContext.from_model(dino, layout, norm, background=background[:, :-1])


# --- static stability -----------------------------------------------------------------------------


def _unstable_count(x: torch.Tensor, ctx: ConstraintContext, dino) -> np.ndarray:
    """Independent count: numpy density of the de-padded physical state, xarray diff along depth."""
    layout = ctx.layout
    physical = ctx.ops.unpad(ctx.denormalise(x)).numpy()
    L = len(layout.levels)
    temperature = xr.DataArray(physical[:, :L], dims=("b", "k", "y_c", "x_c"))
    salinity = xr.DataArray(physical[:, L : 2 * L], dims=("b", "k", "y_c", "x_c"))
    rho = potential_density(temperature, salinity)
    wet = xr.DataArray(dino.tmask.values[list(layout.levels)], dims=("k", "y_c", "x_c"))
    both = wet.isel(k=slice(1, None)).values & wet.isel(k=slice(None, -1)).values
    unstable = (rho.diff("k") < 0).values & both
    return unstable.sum(axis=(1, 2, 3))


def _inverted(data: torch.Tensor, ctx: ConstraintContext, seed: int = 1) -> torch.Tensor:
    """The data with warm anomalies under 20% of the cells (+1 degC over the level above), plus noise."""
    g = torch.Generator().manual_seed(seed)
    t_channels = ctx.toce_channels
    temperature = ctx.denormalise(data, "toce")
    warm = torch.rand(temperature.shape, generator=g, dtype=data.dtype) < 0.2
    warm[:, 0] = False
    inverted = temperature.clone()
    inverted[:, 1:] = torch.where(warm[:, 1:], temperature[:, :-1] + 1.0, temperature[:, 1:])
    x = data.clone()
    x[:, t_channels] = (inverted - ctx.field_offset["toce"]) / ctx.field_scale["toce"]
    x = x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return BorderZero()(x, 0, ctx)


def test_stable_stratification_lowers_penalty_and_unstable_count(dino, model):
    layout, norm, ctx, data = model
    constraint = StableStratification()
    x = _inverted(data, ctx)
    penalty0 = constraint.penalty(x, ctx)
    count0 = _unstable_count(x, ctx, dino)
    np.testing.assert_array_equal(constraint.unstable(x, ctx).numpy(), count0)
    assert (count0 > 500).all()
    # one step lowers the penalty at any t, and touches neither ssh nor land nor padding
    for t in (999, 100, 0):
        y = constraint(x, t, ctx)
        assert (constraint.penalty(y, ctx) < penalty0).all()
        assert torch.equal(y[:, ctx.channels["ssh"]], x[:, ctx.channels["ssh"]])
        assert torch.equal(y[:, ~ctx.ops.mask], x[:, ~ctx.ops.mask])
    # the last 100 steps of a sampling run: penalty down 100-fold, fewer unstable interfaces
    y = x
    for t in range(99, -1, -1):
        y = constraint(y, t, ctx)
    assert (constraint.penalty(y, ctx) < 0.01 * penalty0).all()
    count = _unstable_count(y, ctx, dino)
    assert (count < count0).all()
    np.testing.assert_array_equal(constraint.unstable(y, ctx).numpy(), count)


def test_stable_stratification_options(dino, model):
    layout, norm, ctx, data = model
    x = _inverted(data, ctx)
    seos = StableStratification(eos="seos")
    assert (seos.penalty(seos(x, 0, ctx), ctx) < seos.penalty(x, ctx)).all()
    plain = StableStratification(kappa=1.0, per_cell=False)
    per_cell = StableStratification(kappa=1.0 / ctx.ops.n_wet)
    torch.testing.assert_close(plain(x, 0, ctx), per_cell(x, 0, ctx))
    with pytest.raises(ConstraintError, match="eos"):
        StableStratification(eos="linear")
    # the data are stable: hardly touched
    y = StableStratification()(data, 0, ctx)
    assert float((y - data).abs().max()) < 1e-2
    # inside inference mode (a sampling loop's), autograd still works
    with torch.inference_mode():
        inside = StableStratification()(x.clone(), torch.tensor(0), ctx)
    torch.testing.assert_close(inside, StableStratification()(x, 0, ctx))


def test_float32_matches_float64(dino, model):
    layout, norm, ctx, data = model
    ctx32 = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float32)
    x = _inverted(data, ctx)
    for constraint, atol in (
        (ZeroMean(stable=False), 1e-5),
        (ZeroMean(stable=True), 2e-3),  # its caps follow density steps, which float32 inputs round
        (GradientZeroMean(), 1e-5),
        (GradientZeroMean(reference=True), 1e-5),
        (BorderZero(), 0),
        (BorderZeroGradient(), 1e-6),
        (StableStratification(), 2e-3),
    ):
        y64 = constraint(x, 10, ctx)
        y32 = constraint(x.float(), 10, ctx32)
        assert y32.dtype == torch.float32 and y64.dtype == torch.float64
        torch.testing.assert_close(y32.double(), y64, atol=atol, rtol=1e-5, msg=repr(constraint))


# --- registry -------------------------------------------------------------------------------------


def test_registry_names_and_errors(model):
    layout, norm, ctx, data = model
    assert set(CONSTRAINTS) == {
        "zero_mean",
        "gradient_zero_mean",
        "border_zero",
        "border_zero_gradient",
        "stable_stratification",
        "convective_adjustment",
    }
    assert [c.name for c in get_constraints("border_zero_gradient_zero_mean")] == list(
        ALIASES["border_zero_gradient_zero_mean"]
    )
    assert [c.name for c in get_constraints("border_zero+zero_mean")] == ["border_zero", "zero_mean"]
    assert get_constraints(None) == [] and get_constraints("none") == []
    with pytest.raises(ConstraintError, match=r"Unknown constraint 'zero_meen'.*border_zero.*zero_mean"):
        get_constraints(["border_zero", "zero_meen"])
    with pytest.raises(ConstraintError, match="not a subclass"):
        get_constraints(dict)
    with pytest.raises(ConstraintError, match="Cannot make a constraint"):
        get_constraints(3)
    assert [c.at_end for c in get_constraints(list(CONSTRAINTS))] == [True, False, True, True, True, True]


def test_user_callables_and_subclasses(model):
    layout, norm, ctx, data = model
    calls = []

    def clip(x, t, ctx):
        calls.append(t)
        return x.clamp(-1, 1)

    clip.at_end = True

    class Halve(Constraint):
        name = "halve"

        def __call__(self, x, t, ctx):
            return x / 2

    constraints = get_constraints([clip, Halve, Halve(), "border_zero"], layout=layout)
    assert isinstance(constraints[0], FunctionConstraint) and constraints[0].at_end
    assert constraints[0].name == "clip"
    assert isinstance(constraints[1], Halve) and isinstance(constraints[2], Halve)
    x = 3 * data
    for constraint in constraints:
        x = constraint(x, 5, ctx)
    assert calls == [5]
    assert float(x.abs().max()) <= 0.25


def test_check_refuses_a_model_without_the_fields(dino):
    layout = Layout.from_dataset(dino, fields=["toce", "ssh"])
    with pytest.raises(ConstraintError, match=r"'stable_stratification' needs the fields \['toce', 'soce'\]"):
        get_constraints(["zero_mean", "stable_stratification"], layout=layout)
    with pytest.raises(ConstraintError, match="keeps 1 level"):
        StableStratification().check(Layout.from_dataset(dino, levels=[0]))
    get_constraints("zero_mean", layout=layout)  # nothing else is required


def test_kappa_schedule():
    kappa = KappaSchedule()
    assert kappa(999) == pytest.approx(0.001, abs=1e-10)
    assert kappa(0) == pytest.approx(0.041)
    assert float(kappa(torch.tensor(50))) == pytest.approx(0.001 + 0.04 / np.e, rel=1e-6)
    assert make_kappa(None) == KappaSchedule()
    with pytest.raises(ConstraintError, match="kappa"):
        make_kappa("strong")


def test_stable_stratification_finish_removes_inversions(dino, model):
    layout, norm, ctx, data = model
    constraint = StableStratification()
    x = _inverted(data, ctx)
    count0 = _unstable_count(x, ctx, dino)
    finished = constraint.finish(x, ctx)
    count = _unstable_count(finished, ctx, dino)
    # preconditioned (Gauss-Newton diagonal) steps reach deep and shallow inversions alike
    assert (count < 0.35 * count0).all(), (count0, count)  # fully inverted columns: 4087 -> 1072 in 20 steps
    assert torch.equal(finished[:, ctx.channels["ssh"]], x[:, ctx.channels["ssh"]])
    assert torch.equal(finished[:, ~ctx.ops.mask], x[:, ~ctx.ops.mask])
    # stable data stay as they are
    torch.testing.assert_close(constraint.finish(data, ctx), data, rtol=0, atol=1e-2)


def test_isolated_inversion_is_removed_in_one_finishing_step(dino, model):
    """Analytic: one step with final_kappa = 0.25 moves T and S of both cells to a neutral-plus-margin interface."""
    layout, norm, ctx, data = model
    x = data.clone()
    (south, _), (west, _) = layout.padding
    k, j, i = 5, south + 30, west + 8  # a kept level in the upper ocean, an ocean column (padded indices)
    assert bool(ctx.ops.interface_mask[k, j, i])
    tchan = int(ctx.toce_channels[k + 1])
    x[0, tchan, j, i] += 0.5  # warm the deeper cell: an inversion at interface k only
    # +0.5 normalised is a 10 degC inversion: uncapped, as the analytic step needs 2.4 degC and 1 g/kg
    constraint = StableStratification(final_iterations=1, margin=0.0, max_step_toce=1e9, max_step_soce=1e9)
    y = constraint.finish(x, ctx)
    from xoceandiff.eos import sigma0_teos10

    t = ctx.denormalise(y, "toce")[0, :, j, i].double()
    s = ctx.denormalise(y, "soce")[0, :, j, i].double()
    rho = sigma0_teos10(t, s)
    assert abs(float(rho[k] - rho[k + 1])) < 0.05 * abs(float(
        sigma0_teos10(ctx.denormalise(x, "toce")[0, k, j, i].double(), ctx.denormalise(x, "soce")[0, k, j, i].double())
        - sigma0_teos10(ctx.denormalise(x, "toce")[0, k + 1, j, i].double(), ctx.denormalise(x, "soce")[0, k + 1, j, i].double())))


def test_finish_stays_finite_on_noisy_states(dino, model):
    """Regression: where density barely responds to a channel, the preconditioned step must not explode."""
    layout, norm, ctx, data = model
    noisy = data + 0.3 * torch.randn(data.shape, generator=torch.Generator().manual_seed(0))
    noisy = torch.where(ctx.ops.mask, noisy, torch.zeros_like(noisy))
    finished = StableStratification().finish(noisy, ctx)
    assert torch.isfinite(finished).all()
    assert float((finished - noisy).abs().max()) <= 20 * 1.0 + 1e-6  # at most max_step per iteration


@pytest.mark.parametrize(
    ("eos", "salinity"),
    [("teos10-poly", "absolute"), ("eos80-poly", "absolute"), ("seos", "absolute"), ("auto", "practical")],
)
def test_closed_form_gradient_equals_autograd(dino, model, eos, salinity):
    layout, norm, ctx, data = model
    x = _inverted(data, ctx).double()
    ctx64 = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64, salinity=salinity)
    constraint = StableStratification(eos=eos)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(constraint.penalty(leaf, ctx64).sum(), leaf)
    torch.testing.assert_close(constraint.penalty_gradient(x, ctx64), expected, rtol=1e-9, atol=1e-12)


def test_stable_stratification_auto_follows_the_context_salinity(dino, model):
    """eos="auto" (the default): EOS-80 with a practical-salinity context, TEOS-10 with an absolute one."""
    layout, norm, ctx, data = model
    assert ctx.salinity == "absolute"
    practical = ConstraintContext.from_model(dino, layout, norm, dtype=torch.float64, salinity="practical")
    assert practical.salinity == "practical"
    x = _inverted(data, ctx)
    auto = StableStratification()
    assert auto.eos == "auto" and "eos='auto'" in repr(auto)
    assert auto.eos_for(practical) == "eos80-poly" and auto.eos_for(ctx) == "teos10-poly"
    for name, context in (("eos80-poly", practical), ("teos10-poly", ctx)):
        named = StableStratification(eos=name)
        torch.testing.assert_close(auto.penalty(x, context), named.penalty(x, context), rtol=0, atol=0)
        torch.testing.assert_close(auto(x, 10, context), named(x, 10, context), rtol=0, atol=0)
        torch.testing.assert_close(auto.finish(x, context), named.finish(x, context), rtol=0, atol=0)
    # the densities differ: practical-salinity states are not judged with TEOS-10
    t, s = ctx.denormalise(x, "toce"), ctx.denormalise(x, "soce")
    np.testing.assert_array_equal(auto._density(x, practical).numpy(), potential_density(t, s, eos="eos80-poly").numpy())
    assert not torch.allclose(auto._density(x, practical), auto._density(x, ctx))
    # an explicit name wins over the context
    assert StableStratification(eos="teos10-poly").eos_for(practical) == "teos10-poly"
    with pytest.raises(ConstraintError, match=r"salinity: expected.*'practical'.*found 'psu'"):
        ConstraintContext.from_model(dino, layout, norm, salinity="psu")


def test_density_derivatives_match_finite_differences():
    from xoceandiff.eos import potential_density_and_gradient, sigma0_teos10

    t = np.linspace(-2, 32, 9)[:, None]
    s = np.linspace(30, 40, 7)[None, :]
    rho, d_t, d_s = potential_density_and_gradient(t, s)
    np.testing.assert_allclose(rho, sigma0_teos10(t, s), rtol=0, atol=1e-10)
    h = 1e-5
    np.testing.assert_allclose(d_t, (sigma0_teos10(t + h, s) - sigma0_teos10(t - h, s)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(d_s, (sigma0_teos10(t, s + h) - sigma0_teos10(t, s - h)) / (2 * h), rtol=1e-6)
