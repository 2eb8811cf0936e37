"""The built-in explicit Runge-Kutta tableaux, as exact rationals, each with its source."""

from __future__ import annotations

from .tableau import ButcherTableau

# Forward Euler (1768). Order 1.
EULER = ButcherTableau("euler", c=[0], a=[[]], b=[1], reference="Euler, Institutiones calculi integralis (1768)")

# Explicit midpoint rule (Runge 1895). Order 2.
MIDPOINT = ButcherTableau(
    "midpoint", c=[0, "1/2"], a=[[], ["1/2"]], b=[0, 1],
    reference="Hairer, Norsett & Wanner, Solving ODEs I, Table II.1.1 (Runge 1895)",
)

# Heun's method, the explicit trapezoidal rule. Order 2.
HEUN = ButcherTableau(
    "heun", c=[0, 1], a=[[], [1]], b=["1/2", "1/2"],
    reference="Heun (1900); Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.1",
)

# Ralston's second-order method with minimum error bound (Ralston 1962). Order 2.
RALSTON = ButcherTableau(
    "ralston", c=[0, "2/3"], a=[[], ["2/3"]], b=["1/4", "3/4"],
    reference="Ralston, Math. Comp. 16 (1962) 431-437",
)

# Kutta's third-order method (Kutta 1901). Order 3.
KUTTA3 = ButcherTableau(
    "kutta3", c=[0, "1/2", 1], a=[[], ["1/2"], [-1, 2]], b=["1/6", "2/3", "1/6"],
    reference="Kutta, Z. Math. Phys. 46 (1901) 435-453",
)

# Strong-stability-preserving RK3 (Shu & Osher 1988). Order 3.
SSPRK3 = ButcherTableau(
    "ssprk3", c=[0, 1, "1/2"], a=[[], [1], ["1/4", "1/4"]], b=["1/6", "1/6", "2/3"],
    reference="Shu & Osher, J. Comput. Phys. 77 (1988) 439-471",
)

# The classic Runge-Kutta method (Kutta 1901). Order 4.
RK4 = ButcherTableau(
    "rk4", c=[0, "1/2", "1/2", 1], a=[[], ["1/2"], [0, "1/2"], [0, 0, 1]],
    b=["1/6", "1/3", "1/3", "1/6"],
    reference="Kutta (1901); Hairer, Norsett & Wanner, Solving ODEs I, Table II.1.2",
)

# Kutta's 3/8 rule (Kutta 1901); torchdiffeq's fixed-grid "rk4". Order 4.
RK38 = ButcherTableau(
    "rk38", c=[0, "1/3", "2/3", 1], a=[[], ["1/3"], ["-1/3", 1], [1, -1, 1]],
    b=["1/8", "3/8", "3/8", "1/8"],
    reference="Kutta (1901); Hairer, Norsett & Wanner, Solving ODEs I, Table II.1.2",
)

# Bogacki-Shampine 3(2) pair, FSAL (Bogacki & Shampine 1989). Order 3, embedded 2.
BOSH3 = ButcherTableau(
    "bosh3",
    c=[0, "1/2", "3/4", 1],
    a=[[], ["1/2"], [0, "3/4"], ["2/9", "1/3", "4/9"]],
    b=["2/9", "1/3", "4/9", 0],
    # b - b_hat with b_hat = (7/24, 1/4, 1/3, 1/8)
    b_error=["-5/72", "1/12", "1/9", "-1/8"],
    reference="Bogacki & Shampine, Appl. Math. Lett. 2 (1989) 321-325",
)

# Dormand-Prince 5(4) pair, FSAL (Dormand & Prince 1980). Order 5, embedded 4.
DOPRI5 = ButcherTableau(
    "dopri5",
    c=[0, "1/5", "3/10", "4/5", "8/9", 1, 1],
    a=[
        [],
        ["1/5"],
        ["3/40", "9/40"],
        ["44/45", "-56/15", "32/9"],
        ["19372/6561", "-25360/2187", "64448/6561", "-212/729"],
        ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"],
        ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84"],
    ],
    b=["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0],
    # b - b_hat with b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40)
    b_error=["71/57600", 0, "-71/16695", "71/1920", "-17253/339200", "22/525", "-1/40"],
    reference="Dormand & Prince, J. Comput. Appl. Math. 6 (1980) 19-26",
)

BUILTIN_TABLEAUX: tuple[ButcherTableau, ...] = (
    EULER, MIDPOINT, HEUN, RALSTON, KUTTA3, SSPRK3, RK4, RK38, BOSH3, DOPRI5,
)
