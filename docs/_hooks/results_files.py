"""mkdocs hook: the experiments' result files (experiments/results/: tables, CSVs, plots) become part of the site.

The pages link to them as `../experiments/results/...`, which is right on GitHub (docs/ and experiments/ are
siblings) but outside mkdocs' docs folder. This hook adds every file under experiments/results/ to the site at
`experiments/results/...` (markdown tables as pages, the rest as they are) and points those links there, so
`mkdocs build --strict` still fails on a link to a result file that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

RESULTS = "experiments/results"


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def on_files(files: Files, config) -> Files:
    root = _root(config)
    for path in sorted((root / RESULTS).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            files.append(File(path.relative_to(root).as_posix(), str(root), config["site_dir"],
                              config["use_directory_urls"], inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    depth = page.file.src_uri.count("/")  # pages in docs/ subfolders reach the repository root one level higher
    return markdown.replace("](" + "../" * (depth + 1) + RESULTS + "/", "](" + "../" * depth + RESULTS + "/")
