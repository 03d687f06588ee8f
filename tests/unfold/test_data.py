"""User arrays and files: checks at the boundary, parquet / CSV / ROOT input."""

import numpy as np
import pytest

from surrogate_stats.errors import ExtrapolationWarning, InvalidInput
from surrogate_stats.unfold import (
    TOYS,
    EventSample,
    IBUMethod,
    UnfoldingData,
    check_detector_range,
    read_events,
)


def _arrays(n=100, d=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    return x, x + rng.normal(0, 0.1, (n, d))


def test_from_arrays_accepts_1d_and_masks():
    x, y = _arrays(50, 1)
    s = EventSample.from_arrays(x[:, 0], y[:, 0], passed_reco=np.arange(50) % 2,
                                names=["pt"])
    assert s.particle.shape == (50, 1) and s.passed_reco.dtype == bool
    assert s.measured()[0].shape == (25, 1) and s.names == ("pt",)


@pytest.mark.parametrize("kwargs, match", [
    (dict(detector=np.zeros((99, 2))), "same events"),
    (dict(detector=np.zeros((100, 3))), "same observables"),
    (dict(weights=-np.ones(100)), "non-negative"),
    (dict(weights=np.zeros(100)), "total event weight is zero"),
    (dict(weights=np.ones(99)), r"weights must have shape \(100,\)"),
    (dict(passed_reco=np.ones(99, bool)), "passed_reco"),
    (dict(passed_truth=np.full(100, 2)), "booleans"),
    (dict(names=["a"]), "names"),
])
def test_bad_arrays(kwargs, match):
    x, y = _arrays()
    args = dict(particle=x, detector=y) | kwargs
    with pytest.raises(InvalidInput, match=match):
        EventSample.from_arrays(args.pop("particle"), args.pop("detector"), **args)


def test_nan_where_the_event_passed_is_rejected():
    x, y = _arrays()
    y[3, 1] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        EventSample.from_arrays(x, y)
    mask = np.ones(100, bool)
    mask[3] = False
    assert EventSample.from_arrays(x, y, passed_reco=mask).passed_reco.sum() == 99


def test_out_of_range_data_warns_with_the_fraction():
    toy = TOYS["gaussian"]
    sim = toy.simulate(0, 2000)
    data = np.concatenate([np.zeros((90, 1)), np.full((10, 1), 50.0)])
    with pytest.warns(ExtrapolationWarning, match=r"10\.00% of the measured events"):
        assert check_detector_range(sim, data) == pytest.approx(0.1)


def test_too_few_events_for_the_binning():
    d = TOYS["gaussian"].make(0, n_sim=1000, n_data=40)
    with pytest.raises(InvalidInput, match="too few events for the requested binning"):
        IBUMethod()(None, d, edges=[np.linspace(-3, 3, 21)])
    with pytest.raises(InvalidInput, match="bin edges for 1 observables"):
        IBUMethod()(None, d, edges=[np.linspace(-3, 3, 5)] * 2)


def test_unfolding_data_checks():
    toy = TOYS["gaussian"]
    s1 = toy.simulate(0, 100)
    s2 = TOYS["multidim"].simulate(0, 100)
    with pytest.raises(InvalidInput, match="observables"):
        UnfoldingData(s1, s2)
    x, y = _arrays(100, 1)
    none = EventSample.from_arrays(x, y, passed_reco=np.zeros(100, bool))
    with pytest.raises(InvalidInput, match="both selections"):
        UnfoldingData(none, s1)


def test_read_parquet_csv_root(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    x, y = _arrays(20, 2)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "ra": y[:, 0]})
    frame.to_parquet(tmp_path / "s.parquet")
    frame.to_csv(tmp_path / "s.csv", index=False)
    for name in ("s.parquet", "s.csv"):
        cols = read_events(tmp_path / name, ["a", "ra"])
        np.testing.assert_allclose(cols["a"], x[:, 0])
        np.testing.assert_allclose(cols["ra"], y[:, 0])
    with pytest.raises(InvalidInput, match=r"columns \['zz'\] are not in s.parquet"):
        read_events(tmp_path / "s.parquet", ["a", "zz"])
    with pytest.raises(InvalidInput, match="unknown file type"):
        (tmp_path / "s.txt").write_text("x")
        read_events(tmp_path / "s.txt", ["a"])
    with pytest.raises(InvalidInput, match="no such file"):
        read_events(tmp_path / "missing.parquet", ["a"])
    uproot = pytest.importorskip("uproot")
    with uproot.recreate(tmp_path / "s.root") as f:
        tree = f.mktree("events", {"a": np.float64, "ra": np.float64})
        tree.extend({"a": x[:, 0], "ra": y[:, 0]})
        f["ntuple"] = {"a": x[:, 1]}  # an RNTuple (uproot's default for dicts)
    assert f  # closed
    with pytest.raises(InvalidInput, match="name one with tree="):
        read_events(tmp_path / "s.root", ["a"])
    cols = read_events(tmp_path / "s.root", ["a", "ra"], tree="events")
    np.testing.assert_allclose(cols["ra"], y[:, 0])
    np.testing.assert_allclose(read_events(tmp_path / "s.root", ["a"], tree="ntuple")["a"],
                               x[:, 1])
    with pytest.raises(InvalidInput, match="branches"):
        read_events(tmp_path / "s.root", ["nope"], tree="events")
    with pytest.raises(InvalidInput, match="no tree"):
        read_events(tmp_path / "s.root", ["a"], tree="other")
    with uproot.recreate(tmp_path / "one.root") as f:
        f.mktree("t", {"a": np.float64}).extend({"a": x[:, 0]})
    np.testing.assert_allclose(read_events(tmp_path / "one.root", ["a"])["a"], x[:, 0])


def test_real_data_without_truth_unfolds():
    toy = TOYS["gaussian"]
    sim = toy.simulate(0, 3000)
    data = EventSample.measured_only(toy.sample_data(1, 2000).detector[:, 0], names=["x"])
    assert not data.passed_truth.any() and data.measured()[0].shape == (2000, 1)
    d = UnfoldingData(sim, data, has_truth=False)
    res = IBUMethod()(None, d, edges=[np.linspace(-3, 3, 13)])
    assert res.probs[0].sum() == pytest.approx(1.0) and np.all(res.errors[0] > 0)
