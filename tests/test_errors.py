import pytest

import surrogate_stats as ss


@pytest.mark.parametrize("cls,builtin", [
    (ss.InvalidInput, ValueError), (ss.InvalidWorkspace, ValueError),
    (ss.UnknownPatch, KeyError), (ss.InvalidArtifact, ValueError),
    (ss.FitFailure, RuntimeError), (ss.MissingDependency, ImportError),
    (ss.ExtrapolationError, ValueError), (ss.TaskFailure, RuntimeError),
    (ss.SchedulerUnreachable, ConnectionError), (ss.MissingChunk, KeyError),
])
def test_every_error_is_ours_and_a_builtin(cls, builtin):
    assert issubclass(cls, ss.SurrogateStatsError)
    assert issubclass(cls, builtin)


def test_unknown_patch_message_is_not_quoted():
    assert str(ss.UnknownPatch("patch 'x' is not in ...")) == "patch 'x' is not in ..."
