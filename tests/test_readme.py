"""README's two commands stay true: .ci/run runs README's test command verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m venv")]
    assert len(ci) == 1 and ci[0] in readme


def test_readme_main_job_uses_bundled_files():
    readme = (ROOT / "README.md").read_text()
    for path in ("data/workspaces/3L-eRJR/BkgOnly.json", "data/workspaces/3L-eRJR/patchset.json"):
        assert path in readme and (ROOT / path).is_file()
