"""Toy generators: reproducible, documented parameters visible in the samples."""

import numpy as np
import pytest

from surrogate_stats.unfold import TOYS, EventSample, UnfoldingData, as_generator, get_toy

N = 20000
STAT_SIGMAS = 5  # tolerance on sample moments, in standard errors


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toys_are_reproducible_and_well_formed(name):
    toy = TOYS[name]
    a, b = toy.make(7, n_sim=3000, n_data=2000), toy.make(7, n_sim=3000, n_data=2000)
    c = toy.make(8, n_sim=3000, n_data=2000)
    assert isinstance(a, UnfoldingData) and a.names == toy.names
    np.testing.assert_array_equal(a.sim.detector, b.sim.detector)
    assert not np.array_equal(np.nan_to_num(a.data.particle), np.nan_to_num(c.data.particle))
    for s, n in ((a.sim, 3000), (a.data, 2000)):
        assert isinstance(s, EventSample) and len(s) == n
        assert s.particle.shape == s.detector.shape == (n, len(toy.names))
        assert np.all(np.isfinite(s.particle[s.passed_truth]))
        assert np.all(np.isfinite(s.detector[s.passed_reco]))
        assert np.all(s.passed_reco | s.passed_truth)
    # simulation and data differ at particle level (the prior is wrong)
    ms, md = np.nanmean(a.sim.truth()[0], 0), np.nanmean(a.data.truth()[0], 0)
    assert np.any(np.abs(ms - md) > 0.05 * np.nanstd(a.data.truth()[0], 0))


def test_seed_types():
    jax = pytest.importorskip("jax")
    toy = TOYS["gaussian"]
    x1 = toy.simulate(jax.random.key(3), 10).particle
    x2 = toy.simulate(jax.random.PRNGKey(3), 10).particle
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(toy.simulate(np.random.default_rng(5), 10).particle,
                                  toy.simulate(5, 10).particle)
    assert isinstance(as_generator(1), np.random.Generator)


def test_gaussian_matches_the_omnifold_paper():
    d = TOYS["gaussian"].make(0, n_sim=N, n_data=N)
    for s, mu, sig in ((d.sim, 0.2, 0.8), (d.data, 0.0, 1.0)):
        x, y = s.particle[:, 0], s.detector[:, 0]
        assert abs(x.mean() - mu) < STAT_SIGMAS * sig / np.sqrt(N)
        assert abs(x.std() - sig) < STAT_SIGMAS * sig / np.sqrt(2 * N)
        assert abs((y - x).std() - 0.5) < STAT_SIGMAS * 0.5 / np.sqrt(2 * N)
        assert s.passed_reco.all() and s.passed_truth.all()


def test_multidim_efficiency_rises_and_fakes_are_five_percent():
    s = TOYS["multidim"].simulate(1, N)
    fake = s.passed_reco & ~s.passed_truth
    assert abs((~s.passed_truth).mean() - 0.05) < STAT_SIGMAS * np.sqrt(0.05 * 0.95 / N)
    x0 = s.particle[s.passed_truth, 0]
    reco = s.passed_reco[s.passed_truth]
    low, high = reco[x0 < -1.5].mean(), reco[x0 > 1.5].mean()
    assert low < 0.5 < 0.9 < high  # from ~0.3 to ~1 as in the RooUnfold example
    assert fake.any() and np.all(np.isnan(s.particle[~s.passed_truth]))
    # correlated observables (sim: rho12 = 0.5)
    t = s.particle[s.passed_truth]
    assert abs(np.corrcoef(t[:, 0], t[:, 1])[0, 1] - 0.5) < 0.05


def test_substructure_observables():
    toy = get_toy("substructure")
    s, d = toy.simulate(2, N), toy.sample_data(3, N)
    assert toy.names == ("mass", "width", "multiplicity", "tau21", "lnrho", "zg")
    for ev in (s, d):
        t, r = ev.truth()[0], ev.measured()[0]
        assert np.all(t[:, 2] == np.round(t[:, 2])) and np.all(r[:, 2] == np.round(r[:, 2]))
        assert np.all((t[:, 5] >= 0.1) & (t[:, 5] <= 0.5))
        assert np.all((r[:, 3] >= 0) & (r[:, 3] <= 1))
        assert np.all(t[:, 0] > 0) and np.all(t[:, 4] < 0)
        # inefficiency and fakes from migrations across the pT threshold
        assert 0.02 < (ev.passed_truth & ~ev.passed_reco).mean() < 0.4
        assert 0.02 < (ev.passed_reco & ~ev.passed_truth).mean() < 0.4
    # Herwig-like simulation: fewer constituents, heavier jets than the Pythia-like data
    assert s.truth()[0][:, 2].mean() < d.truth()[0][:, 2].mean() - 1
    assert s.truth()[0][:, 0].mean() > d.truth()[0][:, 0].mean() + 0.5
