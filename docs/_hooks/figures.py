"""mkdocs hook: the benchmark figures in benchmarks/results/ are part of the site, as
docs/benchmarks/results/NAME.png, without a second copy in the repository."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def on_files(files, config):
    for figure in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        files.append(File(f"benchmarks/results/{figure.name}", src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
