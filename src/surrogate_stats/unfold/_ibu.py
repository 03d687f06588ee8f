r"""Iterative Bayesian unfolding (D'Agostini 1995) with efficiency, fakes and error propagation.

For detector-level counts :math:`d_j`, a response :math:`R_{ji} = P(\text{reco bin } j \mid
\text{truth bin } i)` whose column sums are the efficiencies :math:`\epsilon_i \le 1`, fake
fractions :math:`f_j` and a prior :math:`n^{(0)}`, one iteration is

.. math::
    n^{(t+1)}_i = \frac{1}{\epsilon_i} \sum_j
        \frac{R_{ji}\, n^{(t)}_i}{\sum_k R_{jk}\, n^{(t)}_k}\, (1 - f_j)\, d_j .

The statistical covariance is propagated linearly through all iterations (the full Jacobian
:math:`\partial n^{(t)}/\partial d`, including the dependence of the unfolding matrix on the
previous iteration, as in Adye's correction): :math:`V = J\,\mathrm{diag}(d)\,J^T` for Poisson
data. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = ["IBUResult", "ibu", "response_matrix"]


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class IBUResult:
    """Unfolded truth-bin counts, their covariance (data statistics) and the iterations."""

    unfolded: np.ndarray
    covariance: np.ndarray
    n_iterations: int
    history: np.ndarray  # (n_iterations + 1, n_truth_bins), the prior first

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))


def ibu(counts, response, *, fake_fraction=None, prior=None, n_iterations: int = 4,
        data_covariance=None) -> IBUResult:
    """Unfold binned counts with D'Agostini's iteration.

    Args:
        counts: ``(n_reco,)`` measured counts (fakes included).
        response: ``(n_reco, n_truth)`` matrix ``P(reco j | truth i)``; column sums are the
            efficiencies (an event reconstructed outside every reco bin counts as lost).
        fake_fraction: ``(n_reco,)`` fraction of each reco bin without a particle-level
            partner (removed before unfolding); default none.
        prior: ``(n_truth,)`` starting truth distribution (any normalisation); default uniform.
        n_iterations: number of iterations (>= 1); more iterations mean less prior bias and
            larger variance.
        data_covariance: ``(n_reco, n_reco)`` covariance of ``counts``; default Poisson,
            ``diag(counts)``.

    Returns:
        :class:`IBUResult` with the unfolded truth counts (efficiency-corrected) and their
        covariance.

    Example:
        Many iterations approach the matrix inversion ``R^-1 d`` (here 1/0.63 of
        ``[0.8*90 - 0.1*110, 0.8*110 - 0.1*90]``):

        >>> import numpy as np
        >>> r = ibu(np.array([90., 110.]), np.array([[0.8, 0.1], [0.1, 0.8]]), n_iterations=50)
        >>> np.round(r.unfolded, 1).tolist()
        [96.8, 125.4]
    """
    d = np.asarray(counts, dtype=float)
    R = np.asarray(response, dtype=float)
    if d.ndim != 1 or R.ndim != 2 or R.shape[0] != d.shape[0]:
        raise InvalidInput(f"expected counts of shape (n_reco,) and a response of shape "
                           f"(n_reco, n_truth); got {d.shape} and {R.shape}")
    if not (np.all(np.isfinite(d)) and np.all(d >= 0)):
        raise InvalidInput("counts must be finite and non-negative")
    if not (np.all(np.isfinite(R)) and np.all(R >= 0)):
        raise InvalidInput("the response must be finite and non-negative")
    eff = R.sum(axis=0)
    if np.any(eff > 1 + 1e-9):
        raise InvalidInput(f"response columns must sum to the efficiency (<= 1); got column "
                           f"sums up to {eff.max():.4g}")
    if not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1:
        raise InvalidInput(f"n_iterations must be a positive integer; got {n_iterations!r}")
    n_truth = R.shape[1]
    f = np.zeros_like(d) if fake_fraction is None else np.asarray(fake_fraction, dtype=float)
    if f.shape != d.shape or np.any((f < 0) | (f > 1)):
        raise InvalidInput(f"fake_fraction must have shape {d.shape} with values in [0, 1]")
    p = np.ones(n_truth) if prior is None else np.asarray(prior, dtype=float)
    if p.shape != (n_truth,) or np.any(p < 0) or not p.sum() > 0:
        raise InvalidInput(f"prior must be non-negative of shape ({n_truth},) with a positive "
                           "sum")
    V = np.diag(d) if data_covariance is None else np.asarray(data_covariance, dtype=float)
    if V.shape != (d.size, d.size):
        raise InvalidInput(f"data_covariance must have shape {(d.size, d.size)}; got {V.shape}")

    inv_eff = np.divide(1.0, eff, out=np.zeros_like(eff), where=eff > 0)
    signal = (1.0 - f) * d
    n = p * (d.sum() / p.sum())
    J = np.zeros((n_truth, d.size))  # d n / d counts
    history = [n.copy()]
    for _ in range(n_iterations):
        Q = R @ n  # expected reco counts under the current truth estimate
        q_inv = np.divide(1.0, Q, out=np.zeros_like(Q), where=Q > 0)
        # new n_i = inv_eff_i * n_i * sum_j R_ji s_j / Q_j
        g = R.T @ (signal * q_inv)  # (n_truth,)
        new = inv_eff * n * g
        # Jacobian: explicit dependence on the counts, and through n (previous iteration)
        d_counts = (inv_eff * n)[:, None] * R.T * (q_inv * (1.0 - f))[None, :]
        d_prev = np.diag(inv_eff * g) - (inv_eff * n)[:, None] * (
            R.T * (signal * q_inv**2)[None, :]) @ R
        J = d_counts + d_prev @ J
        n = new
        history.append(n.copy())
    return IBUResult(n, J @ V @ J.T, int(n_iterations), np.array(history))


def response_matrix(truth, reco, *, weights, passed_truth, passed_reco, truth_edges, reco_edges):
    """Response, efficiency and fake fractions of one observable from simulated pairs.

    An event is *in the truth acceptance* if it passes the particle-level selection and its
    particle-level value is inside ``truth_edges``; likewise at reco. Events reconstructed
    outside the acceptance count as inefficiency; reco events without a particle-level
    partner in the acceptance are fakes.

    Returns:
        ``(response (n_reco, n_truth), fake_fraction (n_reco,), truth_counts (n_truth,))``,
        the last the simulation's particle-level histogram (its prior).
    """
    t_in = passed_truth & (truth >= truth_edges[0]) & (truth <= truth_edges[-1])
    r_in = passed_reco & (reco >= reco_edges[0]) & (reco <= reco_edges[-1])
    ti = np.clip(np.searchsorted(truth_edges, np.where(t_in, truth, truth_edges[0]),
                                 side="right") - 1, 0, len(truth_edges) - 2)
    rj = np.clip(np.searchsorted(reco_edges, np.where(r_in, reco, reco_edges[0]),
                                 side="right") - 1, 0, len(reco_edges) - 2)
    nt, nr = len(truth_edges) - 1, len(reco_edges) - 1
    truth_counts = np.bincount(ti[t_in], weights[t_in], minlength=nt)
    both = t_in & r_in
    mig = np.zeros((nr, nt))
    np.add.at(mig, (rj[both], ti[both]), weights[both])
    R = mig / np.where(truth_counts > 0, truth_counts, 1.0)[None, :]
    reco_counts = np.bincount(rj[r_in], weights[r_in], minlength=nr)
    fakes = np.bincount(rj[r_in & ~t_in], weights[r_in & ~t_in], minlength=nr)
    f = np.divide(fakes, reco_counts, out=np.zeros(nr), where=reco_counts > 0)
    return R, f, truth_counts
