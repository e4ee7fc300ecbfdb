"""The README tells the truth about the config: its reference section is what config.py generates."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gen_config_doc  # noqa: E402


def test_config_reference_is_generated_from_config_py():
    readme = (ROOT / "README.md").read_text()
    assert gen_config_doc.readme_section(readme) == gen_config_doc.generate(), (
        "README's configuration reference is stale: run python tools/gen_config_doc.py --readme"
    )


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "fastproxy demo" in first_block.splitlines()[0]
    assert "tools/test.sh --install" in first_block.splitlines()[1]
    assert "tools/test.sh --install" in (ROOT / ".ci" / "run").read_text()
