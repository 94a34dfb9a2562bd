"""Flow-matching ODE solvers over a fixed sigma list (spec §5).

Flow matching: ``x_s = (1 - s) * x0 + s * noise``; the model predicts the velocity
``v = noise - x0``, so the data estimate is ``x0 = x - s * v``. With ``alpha = 1 - s``
and ``lambda = log(alpha) - log(s)`` (half log-SNR), the multistep solvers below are
the exponential-integrator updates in x0-prediction form.

Every solver is a small object stepped once per sigma: ``step(i, x, v) -> x_next``,
with ``v`` the (guided) velocity at ``x`` and ``sigmas[i]``. It keeps its own history,
so one solver object carries across an expert switch unchanged: the multistep history
of the high-noise expert feeds the first low-noise steps, as in the official loop.

* ``"unipc"``: the official FlowUniPCMultistepScheduler (UniPC bh2, order 2, predict-x0,
  corrector on, lower order on the last step), spec §5.2.
* ``"euler"``: ``x + v * (s_next - s)``.
* ``"dpmpp_2m"``: the official ``dpm++`` path (DPM-Solver++ 2M, midpoint, first order on
  the first and last step).

Scalar coefficients are computed in float64 from the float32 sigmas; tensors stay in
their dtype (float32 for the sampler).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

SOLVERS = ("unipc", "euler", "dpmpp_2m")


def half_log_snr(sigma: float) -> float:
    """``lambda = log(1 - s) - log(s)``; +inf at s = 0, -inf at s = 1."""
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


class FlowSolver:
    """Base: holds the sigma list and checks that steps come in order."""

    name = "base"

    def __init__(self, sigmas: torch.Tensor):
        values = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float32).flatten()]
        if len(values) < 2 or values[-1] != 0.0:
            raise ValueError(f"sigmas must hold at least 2 values and end in 0, got {values[:3]}...{values[-2:]}")
        if any(a <= b for a, b in zip(values, values[1:])):
            raise ValueError("sigmas must be strictly decreasing")
        self.sigmas = values
        self.steps = len(values) - 1
        self._next = 0

    def step(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if i != self._next:
            raise RuntimeError(f"{self.name} solver expected step {self._next}, got {i}; steps must run in order")
        self._next += 1
        return self._step(i, x, v)

    def x0(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Data estimate ``x - sigma_i * v`` at step ``i``."""
        return x - self.sigmas[i] * v

    def _step(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Euler(FlowSolver):
    """Exact flow Euler: one model call per step, first order."""

    name = "euler"

    def _step(self, i, x, v):
        return x + v * (self.sigmas[i + 1] - self.sigmas[i])


class FlowUniPC(FlowSolver):
    """UniPC bh2, order 2, predict-x0 (spec §5.2): UniC corrector then UniP predictor per step."""

    name = "unipc"

    def __init__(self, sigmas: torch.Tensor):
        super().__init__(sigmas)
        # A first sigma of exactly 1 ("simple" schedule) has lambda = -inf and makes the
        # order-2 corrector solve inf/inf. Nudge it below 1 as diffusers does (float32(1 - 1e-6));
        # the official "wan" grid starts at 0.9999 and is untouched.
        if abs(self.sigmas[0] - 1.0) < 1e-6:
            self.sigmas[0] = float(torch.tensor(self.sigmas[0] - 1e-6, dtype=torch.float32))
        self.lambdas = [half_log_snr(s) for s in self.sigmas]
        self._m: list[torch.Tensor] = []  # data estimates m_{i-2}, m_{i-1}
        self._x_prev: Optional[torch.Tensor] = None  # corrected x_{i-1}
        self._order_prev = 0  # predictor order used at step i-1

    def _step(self, i, x, v):
        m = x - self.sigmas[i] * v  # from the *uncorrected* x_i, as the official code
        if i > 0:
            x = self._correct(i, x, m)
        order = min(2, self.steps - i, i + 1)
        x_next = self._predict(i, x, m, order)
        self._m = (self._m + [m])[-2:]
        self._x_prev, self._order_prev = x, order
        return x_next

    def _predict(self, i: int, x: torch.Tensor, m: torch.Tensor, order: int) -> torch.Tensor:
        s, s_next = self.sigmas[i], self.sigmas[i + 1]
        if s_next == 0.0:
            return m  # lambda = inf: the update collapses to the data estimate exactly
        h = self.lambdas[i + 1] - self.lambdas[i]
        phi = math.expm1(-h)  # bh2: B(h) = expm1(-h) as well
        alpha_next = 1.0 - s_next
        x_next = x * (s_next / s) - m * (alpha_next * phi)
        if order == 2:
            r = (self.lambdas[i - 1] - self.lambdas[i]) / h
            d1 = (self._m[-1] - m) / r
            x_next = x_next - d1 * (alpha_next * phi * 0.5)
        return x_next

    def _correct(self, i: int, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        s_prev, s = self.sigmas[i - 1], self.sigmas[i]
        m_prev = self._m[-1]
        h = self.lambdas[i] - self.lambdas[i - 1]
        phi = math.expm1(-h)
        b_h = phi
        alpha = 1.0 - s
        base = self._x_prev * (s / s_prev) - m_prev * (alpha * phi)
        d_t = m - m_prev
        if self._order_prev == 1:
            return base - d_t * (alpha * b_h * 0.5)
        r = (self.lambdas[i - 2] - self.lambdas[i - 1]) / h
        d1 = (self._m[-2] - m_prev) / r
        rho0, rho1 = _unic_rhos(h, b_h, r)
        return base - (d1 * rho0 + d_t * rho1) * (alpha * b_h)


def _unic_rhos(h: float, b_h: float, r: float) -> tuple[float, float]:
    """Solve ``[[1, 1], [r, 1]] rho = [b1, b2]`` for the order-2 UniC corrector weights."""
    hh = -h
    phi = math.expm1(hh)
    g1 = phi / hh - 1.0
    b1 = g1 / b_h
    b2 = 2.0 * (g1 / hh - 0.5) / b_h
    rho0 = (b1 - b2) / (1.0 - r)
    return rho0, b1 - rho0


class DPMpp2M(FlowSolver):
    """DPM-Solver++ 2M (midpoint) in flow x0-prediction, first order at both ends."""

    name = "dpmpp_2m"

    def __init__(self, sigmas: torch.Tensor):
        super().__init__(sigmas)
        self.lambdas = [half_log_snr(s) for s in self.sigmas]
        self._m_prev: Optional[torch.Tensor] = None

    def _step(self, i, x, v):
        m = x - self.sigmas[i] * v
        s, s_next = self.sigmas[i], self.sigmas[i + 1]
        m_prev, self._m_prev = self._m_prev, m
        if s_next == 0.0:
            return m  # the final, first-order step to sigma 0 lands on the data estimate
        h = self.lambdas[i + 1] - self.lambdas[i]
        coef = (1.0 - s_next) * math.expm1(-h)
        x_next = x * (s_next / s) - m * coef
        if i > 0:
            # r0 = h_prev / h; an infinite h_prev (first sigma 1) makes the correction vanish.
            r0 = (self.lambdas[i] - self.lambdas[i - 1]) / h
            x_next = x_next - (m - m_prev) * (0.5 * coef / r0)
        return x_next


def make_solver(name: str, sigmas: torch.Tensor) -> FlowSolver:
    """A fresh solver for one run over ``sigmas`` (float32, ending in 0)."""
    classes = {"unipc": FlowUniPC, "euler": Euler, "dpmpp_2m": DPMpp2M}
    if name not in classes:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SOLVERS}")
    return classes[name](sigmas)
