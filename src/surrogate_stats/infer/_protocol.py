"""What the inference functions need from a surrogate."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from surrogate_stats.errors import InvalidInput

__all__ = ["Surrogate", "check_surrogate"]


@runtime_checkable
class Surrogate(Protocol):
    """A profiled likelihood in mu: ONNX-backed, in-memory or a plugin's.

    ``nll`` is -ln L with pyhf's normalisation; ``tmu`` is -2 ln lambda; ``expected=True``
    selects pyhf's Asimov data; ``mu_hat`` / ``mu_hat_expected`` are the bounded best fits.
    """

    @property
    def domain(self) -> tuple[float, float]: ...

    @property
    def mu_hat(self) -> float: ...

    @property
    def mu_hat_expected(self) -> float: ...

    def nll(self, mu, *, expected: bool = False): ...

    def tmu(self, mu, *, expected: bool = False): ...


def check_surrogate(surrogate, *, need_expected: bool = True) -> None:
    """Raise :class:`InvalidInput` naming what ``surrogate`` lacks."""
    needed = ["nll", "tmu", "domain", "mu_hat"] + (["mu_hat_expected"] if need_expected else [])
    missing = [name for name in needed if not hasattr(surrogate, name)]
    if missing:
        what = "expected (Asimov) results" if missing == ["mu_hat_expected"] else "inference"
        raise InvalidInput(f"{type(surrogate).__name__} lacks {missing}, needed for {what}; "
                           "pass a profiled-likelihood surrogate (load_surrogate(path))")
