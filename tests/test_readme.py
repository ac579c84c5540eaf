"""The README's demo block runs: each command of the block marked `<!-- tested: demo-out/run -->`,
against a copy of a scored run laid out as the demo leaves it; every `curate sql` / `audit` line of
the README and of the reference pages in docs/ runs; the reasons table is the registry's."""

import re
import shlex
import shutil
from pathlib import Path

from click.testing import CliRunner

from curate.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def manual() -> str:
    """The README and every reference page."""
    return "\n".join(p.read_text() for p in [README, *DOCS])


def demo_block() -> list[str]:
    text = README.read_text()
    m = re.search(r"<!-- tested: demo-out/run -->\s*```bash\n(.*?)```", text, re.S)
    assert m, "the README lost its tested demo block"
    return [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_the_readme_demo_block_runs(scored_run, tmp_path):
    demo = tmp_path / "demo-out"
    shutil.copytree(scored_run, demo / "run")
    lines = demo_block()
    assert len(lines) >= 5
    for line in lines:
        argv = shlex.split(line.replace("demo-out", str(demo)))
        assert argv[0] == ".venv/bin/curate", line
        r = CliRunner().invoke(main, argv[1:])
        assert r.exit_code == 0, f"{line}\n{r.output}"
    assert (demo / "export-rec" / "train.rec").exists() and (demo / "export-lfw" / "labels.tsv").exists()
    assert not (demo / "round-trip").exists()  # the dry run wrote nothing


def test_every_sql_and_audit_example_in_the_readme_runs(scored_run, tmp_path):
    """Each `curate sql` / `curate audit` line of the README, on a scored run standing in for its
    run path (the -f and prompt lines get their file and their input)."""
    run = tmp_path / "ms1m"
    shutil.copytree(scored_run, run)
    (tmp_path / "checks.sql").write_text("SELECT count(*) AS n FROM images; SELECT count(*) AS kept FROM curated WHERE keep;")
    lines = [ln.split("  #")[0].strip() for ln in manual().splitlines()
             if re.match(r"\.venv/bin/curate (sql|audit) ", ln)]
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line)[1:]
        path = argv[1]
        argv = [str(run) if a == path else a.replace(path + "/", str(run) + "/") for a in argv]
        argv = [str(tmp_path / "checks.sql") if a == "checks.sql" else a for a in argv]
        r = CliRunner().invoke(main, argv, input="SELECT 1 AS one;\n" if len(argv) == 2 and argv[0] == "sql" else None)
        assert r.exit_code == 0, f"{line}\n{r.output}"


def test_the_readme_reasons_table_is_the_registry():
    from curate import reasons

    m = re.search(r"<!-- reasons: generated from curate/reasons.py -->\n(.*?)\n<!-- /reasons -->", manual(), re.S)
    assert m and m.group(1) == reasons.markdown(), "docs/scoring.md reasons table: paste `python -m curate.reasons`"


def test_the_readme_links_every_reference_page_and_every_link_resolves():
    text = README.read_text()
    for page in DOCS:
        assert f"](docs/{page.name})" in text, page.name
    for page in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"
