"""The documentation: the README is the two-command quick start plus a map whose links all resolve, the site's
navigation holds every page, and the quick start reads the same on the site. (The site itself is built with
`mkdocs build --strict` by .ci/run: a broken link, anchor or API reference fails there.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def quick_start(text: str) -> str:
    """The first bash block after the '## Quick start' heading."""
    section = text.split("## Quick start", 1)[1]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which is missing"


def test_the_site_navigation_lists_every_page_once():
    config = (ROOT / "mkdocs.yml").read_text()
    listed = re.findall(r":\s+([\w./-]+\.md)\s*$", config, flags=re.MULTILINE)
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(listed) == pages


def test_the_quick_start_is_two_commands_and_the_same_on_the_site():
    readme = quick_start((ROOT / "README.md").read_text())
    commands = [line for line in readme.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith(".venv/bin/jaxppo train --env CartPole-v1 --out runs/cartpole")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert commands[1] in ci  # the test command is what CI runs, as one of its lines ...
    assert ci[-1] == commands[1].split(" && ")[-1].replace('-m "not slow"', "-m slow")  # ... then the slow tests
    site = quick_start((ROOT / "docs" / "index.md").read_text())
    assert [line for line in site.splitlines() if line and not line.startswith("#")] == commands


def test_the_api_reference_holds_every_module_of_the_library():
    documented = set(re.findall(r"^::: (jaxppo[\w.]*)", (ROOT / "docs" / "api.md").read_text(), flags=re.MULTILINE))
    package = ROOT / "jaxppo"
    modules = {".".join(("jaxppo", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")
               for p in [*package.glob("*.py"), *(package / "envs").glob("*.py")]}
    assert sorted(modules - documented) == []
