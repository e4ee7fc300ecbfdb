"""Lint as a test: ruff for the Python, cython-lint for the Cython (both configured in pyproject.toml)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff():
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_cython_lint():
    sources = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("fastproxy/*.p[yx][xd]"))
    assert sources, "no Cython sources found"
    # cython-lint has no `python -m` entry: call its console-script function in this interpreter
    r = subprocess.run([sys.executable, "-c", "import sys; from cython_lint.cython_lint import main; "
                        "sys.argv[0] = 'cython-lint'; sys.exit(main())", *sources], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
