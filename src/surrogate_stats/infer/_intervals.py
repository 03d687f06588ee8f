"""Profile-likelihood intervals for mu with iminuit (MINOS on the surrogate's NLL)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.infer._protocol import check_surrogate

__all__ = ["ProfileInterval", "profile_interval"]


@dataclass(frozen=True)
class ProfileInterval:
    """A profile-likelihood interval ``[lower, upper]`` at confidence ``level``.

    ``lower_at_bound`` / ``upper_at_bound`` say that MINOS hit the trained domain's end (the
    interval is then one-sided there, e.g. lower = 0 for mu_hat at 0).
    """

    level: float
    mu_hat: float
    lower: float
    upper: float
    lower_at_bound: bool
    upper_at_bound: bool
    expected: bool

    def __repr__(self) -> str:
        data = "expected" if self.expected else "observed"
        return (f"ProfileInterval({self.level:.4g} CL, {data}): mu_hat = {self.mu_hat:.4g}, "
                f"[{self.lower:.4g}, {self.upper:.4g}]"
                + (" (lower at domain bound)" if self.lower_at_bound else "")
                + (" (upper at domain bound)" if self.upper_at_bound else ""))

    def _repr_html_(self) -> str:
        data = "expected (Asimov)" if self.expected else "observed"
        rows = [("data", data), ("CL", f"{self.level:.4g}"), ("μ̂", f"{self.mu_hat:.5g}"),
                ("lower", f"{self.lower:.5g}" + (" (bound)" if self.lower_at_bound else "")),
                ("upper", f"{self.upper:.5g}" + (" (bound)" if self.upper_at_bound else ""))]
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in rows)
        return f"<table><caption>profile-likelihood interval</caption>{cells}</table>"


def profile_interval(surrogate, *, level: float = 0.68, expected: bool = False
                     ) -> ProfileInterval:
    """MINOS interval of mu at ``level`` (0.68, 0.95, or any in (0, 1)) on ``surrogate.nll``."""
    iminuit = optional_import("iminuit")
    check_surrogate(surrogate, need_expected=expected)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise InvalidInput(f"level must be in (0, 1); got {level!r}")
    lo, hi = surrogate.domain
    start = surrogate.mu_hat_expected if expected else surrogate.mu_hat

    def nll(mu):
        return surrogate.nll(float(mu), expected=expected)

    m = iminuit.Minuit(nll, mu=min(max(start, lo), hi), name=["mu"])
    m.errordef = iminuit.Minuit.LIKELIHOOD
    m.limits["mu"] = (lo, hi)
    m.migrad()
    m.minos("mu", cl=float(level))
    me = m.merrors["mu"]
    mu_hat = float(m.values["mu"])
    return ProfileInterval(level=float(level), mu_hat=mu_hat, lower=mu_hat + me.lower,
                           upper=mu_hat + me.upper, lower_at_bound=bool(me.at_lower_limit),
                           upper_at_bound=bool(me.at_upper_limit), expected=expected)
