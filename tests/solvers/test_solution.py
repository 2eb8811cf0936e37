"""The one fixed-grid driver, the Solution it returns, outputs at requested times, the step controller."""

from fractions import Fraction

import pytest
import torch

import contdepth as cd
from contdepth.solvers import Scheme, StepController, integrate, integrate_adaptive, solve_fixed_grid

X0 = torch.tensor([1.0, -0.5], dtype=torch.float64)


def decay(t, x):
    return -x * (1 + t)


def exact_decay(t):  # x' = -(1 + t) x  =>  x(t) = x0 exp(-t - t^2/2)
    return X0 * torch.exp(torch.tensor(-t - t * t / 2, dtype=torch.float64))


def test_solution_is_not_a_tuple():
    solution = integrate(decay, X0, scheme="rk4", n_steps=4)
    assert solution.ts is None and solution.ys is None
    with pytest.raises(TypeError):
        state, stats = solution  # the old 2-tuple unpacking fails at once
    assert "4 steps" in repr(solution)


@pytest.mark.parametrize("scheme", ["euler", "rk4", "dopri5"])
def test_t_eval_on_the_grid_gives_grid_states(scheme):
    path = integrate(decay, X0, scheme=scheme, n_steps=4, return_path=True)
    at = integrate(decay, X0, scheme=scheme, n_steps=4, t_eval=[0.0, 0.5, 1.0])
    assert at.ts == (0.0, 0.5, 1.0)
    torch.testing.assert_close(at.ys, path.ys[[0, 2, 4]], rtol=0, atol=0)
    assert at.stats.n_steps == 4


def test_t_eval_inside_a_step_splits_it():
    solution = integrate(decay, X0, scheme="rk4", n_steps=2, t_eval=torch.tensor([0.3, 0.75], dtype=torch.float64))
    assert solution.stats.n_steps == 4  # 0 | 0.3 | 0.5 | 0.75 | 1
    assert solution.stats.step_ends == (0.3, 0.5, 0.75, 1.0)
    for t, y in zip(solution.ts, solution.ys):
        torch.testing.assert_close(y, exact_decay(t), rtol=0, atol=2e-4)
    # the saved states are states of the integration: restarting from one reproduces the end
    rest = integrate(decay, solution.ys[1], scheme="rk4", n_steps=1, t0=0.75, t1=1.0)
    torch.testing.assert_close(rest.state, solution.state, rtol=0, atol=1e-15)


def test_t_eval_backwards_in_time():
    solution = integrate(decay, X0, scheme="rk4", n_steps=8, t0=1.0, t1=0.0, t_eval=[1.0, 0.4, 0.0])
    assert solution.ts == (1.0, 0.4, 0.0)
    torch.testing.assert_close(solution.ys[0], X0)
    torch.testing.assert_close(solution.ys[-1], solution.state)


def test_multistep_scheme_needs_t_eval_on_its_grid():
    on_grid = integrate(decay, X0, scheme="ab3", n_steps=4, t_eval=[0.25, 1.0])
    path = integrate(decay, X0, scheme="ab3", n_steps=4, return_path=True)
    torch.testing.assert_close(on_grid.ys, path.ys[[1, 4]], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^t_eval: 0\.3 is not on the 4-step grid and 'ab3' is a multistep scheme"):
        integrate(decay, X0, scheme="ab3", n_steps=4, t_eval=[0.3])


@pytest.mark.parametrize("t_eval, match", [
    ([], "at least one time"),
    ([0.5, 0.2], "strictly increasing"),
    ([0.5, 0.5], "strictly increasing"),
    ([1.5], "outside"),
    ("0.5", "sequence of times"),
    (torch.zeros(2, 2), "1-D"),
])
def test_bad_t_eval(t_eval, match):
    with pytest.raises(ValueError, match=match):
        integrate(decay, X0, n_steps=2, t_eval=t_eval)
    with pytest.raises(ValueError, match=match):
        integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-8, t_eval=t_eval)


def test_t_eval_and_return_path_are_exclusive():
    with pytest.raises(ValueError, match="^t_eval: give t_eval or return_path, not both"):
        integrate(decay, X0, n_steps=2, t_eval=[0.5], return_path=True)


def test_adaptive_steps_exactly_onto_t_eval():
    times = [0.0, Fraction(1, 3), 0.7, 1.0]
    solution = integrate_adaptive(decay, X0, rtol=1e-9, atol=1e-12, t_eval=times)
    assert solution.ts == (0.0, 1 / 3, 0.7, 1.0)
    for t in (1 / 3, 0.7):
        assert t in solution.stats.step_ends
    for t, y in zip(solution.ts, solution.ys):
        torch.testing.assert_close(y, exact_decay(t), rtol=1e-7, atol=1e-9)


def test_adaptive_t_eval_keeps_fsal_reuse():
    # dopri5 is FSAL: a step ending on a requested time (unlike a breakpoint) needs no extra evaluation
    calls = {"n": 0}

    def f(t, x):
        calls["n"] += 1
        return decay(t, x)

    controller = StepController(first_step=0.25)
    saved = integrate_adaptive(f, X0, rtol=1e-3, atol=1e-6, t_eval=[0.5], controller=controller)
    stats = saved.stats
    assert stats.n_evaluations == calls["n"] == 1 + 6 * (stats.n_steps + stats.n_rejected)


def test_step_controller_values_change_the_steps_and_are_checked():
    loose = integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-9, controller=StepController(safety=0.5))
    usual = integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-9)
    assert loose.stats.n_steps > usual.stats.n_steps  # a smaller safety factor takes smaller steps
    capped = integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-9, controller=StepController(factor_max=1.1,
                                                                                         first_step=1e-3))
    assert capped.stats.step_ends[0] == pytest.approx(1e-3)
    assert capped.stats.n_steps > usual.stats.n_steps  # growth of at most 10% a step
    for kwargs, match in [(dict(safety=0.0), "controller.safety"), (dict(factor_min=1.0), "controller.factor_min"),
                          (dict(factor_max=1.0), "controller.factor_max"), (dict(first_step=-1.0), "first_step"),
                          (dict(max_steps=0), "max_steps")]:
        with pytest.raises(ValueError, match=f"^{match}: must be"):
            StepController(**kwargs)
    with pytest.raises(TypeError, match="controller: expected a StepController"):
        integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-9, controller={"safety": 0.5})


class Leapfrog(Scheme):
    """A user's two-step scheme written as init + step: x_{n+1} = x_{n-1} + 2 h f(t_n, x_n), Euler start."""

    name, order = "my_leapfrog", 2

    def stage_offsets(self, n_steps):
        return ((Fraction(0),),) * n_steps

    def step(self, rate, carry, n, stages, h):
        x = carry[0]
        f = rate(stages[0], x)
        if len(carry) == 1:
            return (torch.add(x, f, alpha=h), x)
        return (torch.add(carry[1], f, alpha=2 * h), x)


def test_a_user_scheme_gets_path_stats_and_checkpointing_from_the_driver():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x0 = X0.clone().requires_grad_()
    runs = []
    for checkpoint in (False, True):
        net.zero_grad()
        x0.grad = None
        solution = integrate(lambda t, x: net(x), x0, scheme=Leapfrog(), n_steps=6, return_path=True,
                             checkpoint=checkpoint)
        solution.state.square().sum().backward()
        runs.append((solution.state.detach(), solution.ys.detach(), x0.grad.clone(), net[0].weight.grad.clone()))
        assert solution.stats.n_evaluations == 6 and solution.ys.shape == (7, 2)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # converges at second order on the decay problem
    errors = [float((integrate(decay, X0, scheme=Leapfrog(), n_steps=n).state - exact_decay(1.0)).norm())
              for n in (64, 128)]
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_checkpointing_saves_memory_for_every_scheme_the_same_way():
    """Per step: with checkpointing only each step's input carry is kept, for RK and multistep alike."""
    for scheme in ("rk4", "ab3", cd.LMResNetScheme(0.1)):
        saved = {}
        for checkpoint in (False, True):
            count = [0]

            def pack(t):
                count[0] += t.numel()
                return t

            x0 = torch.randn(4, 32, dtype=torch.float64, requires_grad=True)
            layer = torch.nn.Linear(32, 32).double()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                integrate(lambda t, x: torch.tanh(layer(x)), x0, scheme=scheme, n_steps=16, checkpoint=checkpoint)
            saved[checkpoint] = count[0]
        assert saved[True] < saved[False] / 2, scheme


def test_solve_fixed_grid_is_the_driver_behind_integrate():
    scheme = cd.get_scheme("rk4")
    schedule = scheme.schedule(4, 0, 1)
    direct = solve_fixed_grid(scheme, lambda stage, x: decay(stage.t, x), X0, schedule)
    torch.testing.assert_close(direct.state, integrate(decay, X0, scheme="rk4", n_steps=4).state, rtol=0, atol=0)


def test_float_times_that_mean_grid_points_are_grid_points():
    # 0.1 is not exactly 1/10: without snapping, ab2 would refuse it and rk4 would add steps of 1e-17
    assert integrate(decay, X0, scheme="ab2", n_steps=10, t_eval=[0.1, 1.0]).stats.n_steps == 10
    grid = integrate(decay, X0, scheme="rk4", n_steps=10, t_eval=torch.linspace(0, 1, 11))  # float32 times
    assert (grid.stats.n_steps, grid.stats.n_evaluations, len(grid.ts)) == (10, 40, 11)
    path = integrate(decay, X0, scheme="rk4", n_steps=10, return_path=True)
    torch.testing.assert_close(grid.ys, path.ys, rtol=0, atol=0)


def test_adaptive_t_eval_a_rounding_away_from_a_breakpoint_or_the_end():
    from fractions import Fraction as F

    solution = integrate_adaptive(decay, X0, rtol=1e-6, atol=1e-9, breakpoints=[F(1, 3)],
                                  t_eval=[1 / 3, 0.9999999999999999])
    assert 1 / 3 in solution.stats.step_ends  # one step end serves the breakpoint and the requested time
    torch.testing.assert_close(solution.ys[1], solution.state, rtol=0, atol=0)
    torch.testing.assert_close(solution.ys[0], exact_decay(1 / 3), rtol=1e-6, atol=1e-8)


def test_solve_adaptive_checks_its_times_up_front():
    from fractions import Fraction as F

    from contdepth.solvers import get_tableau, solve_adaptive

    with pytest.raises(ValueError, match=r"^t_eval: 2\.0 lies outside"):
        solve_adaptive(lambda stage, x: -x, X0, tableau=get_tableau("dopri5"), rtol=1e-6, atol=1e-9,
                       t0=F(0), t1=F(1), t_eval=(F(2),))
    scheme = cd.get_scheme("rk4")
    with pytest.raises(ValueError, match=r"^save_at: grid indices must lie in 0\.\.2"):
        solve_fixed_grid(scheme, lambda stage, x: -x, X0, scheme.schedule(2, 0, 1), save_at=frozenset({3}))
