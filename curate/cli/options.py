"""Options built from the config dataclasses: every field made with ``curate.config.option`` is a
command-line option with that field's default and help, so neither is written twice. A
command's keyword arguments are then the fields' names, and ``build`` turns them back into the
config."""

from __future__ import annotations

import dataclasses
import os

import click

from curate.config import (
    DecodeConfig,
    DetectConfig,
    EmbedConfig,
    Resources,
    RunConfig,
    ScoreConfig,
)


def input_format(fn):
    """--format: the input kinds (curate.io.sources.SOURCES: a new reader is a new choice)."""
    from curate.io.sources import SOURCES

    return click.option("--format", "input_format", type=click.Choice(sorted(SOURCES)), default=None,
                        help="Input kind (default: guessed from INPUT).")(fn)


def exposed(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _type(f: dataclasses.Field):
    t = str(f.type).replace(" | None", "")
    if f.metadata.get("choices"):
        return click.Choice(list(f.metadata["choices"]))
    if f.metadata.get("path"):
        return click.Path(exists=True, dir_okay=False)
    return {"int": int, "float": float, "str": str}[t]


def click_option(f: dataclasses.Field):
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    decls = [flag, *([f.metadata["short"]] if f.metadata.get("short") else []), f.name]
    if str(f.type) == "bool":
        return click.option(*decls, is_flag=True, default=f.default, help=f.metadata["help"])
    return click.option(*decls, type=_type(f), default=f.default, show_default=f.default is not None,
                        help=f.metadata["help"])


def config_options(*classes):
    """A decorator adding the exposed fields of ``classes`` as options, in field order."""
    def deco(fn):
        for cls in reversed(classes):
            for f in reversed(exposed(cls)):
                fn = click_option(f)(fn)
        return fn
    return deco


def build(cls, kw: dict, **extra):
    """``cls`` from the command's keyword arguments (its exposed fields), plus ``extra`` fields."""
    return cls(**{f.name: kw[f.name] for f in exposed(cls) if f.name in kw}, **extra)


SCORE_OPTIONS = tuple(f.name for f in exposed(ScoreConfig)) + ("calibration",)


def score_options(fn):
    """The scoring's options (ScoreConfig), and --calibration."""
    fn = click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
                      help="A model card (from `curate calibrate`) whose calibration to use instead of the run's "
                           "recognizer card.")(fn)
    return config_options(ScoreConfig)(fn)


def score_config(kw: dict) -> ScoreConfig:
    qm = kw.get("quality_model")
    return build(ScoreConfig, {**kw, "quality_model": os.path.abspath(qm) if qm else None})


def run_options(fn):
    """A run's options: output, models and resources (RunConfig, DetectConfig, EmbedConfig,
    Resources), the command's switches, and the scoring's."""
    fn = score_options(fn)
    for o in reversed([
        click.option("--allow-download", is_flag=True, help="Let insightface download a named model pack (off: no network)."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--no-score", is_flag=True, help="Stop after embedding (no noise/duplicate/quality scoring)."),
        click.option("--no-audit", is_flag=True,
                     help="After scoring, skip the sql/ audits (OUT/audit-<scores>/) and the HTML report."),
    ]):
        fn = o(fn)
    fn = config_options(DetectConfig, EmbedConfig, Resources)(fn)
    fn = click_option(next(f for f in dataclasses.fields(RunConfig) if f.name == "shard_size"))(fn)
    return click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
                        help="Output directory (shards, DuckDB file).")(fn)


def configs(kw: dict) -> tuple[RunConfig, Resources, ScoreConfig]:
    """The run's config, resources and scoring config from a run command's keyword arguments: a
    dry run builds (and so refuses) exactly what the real run would."""
    cfg = RunConfig(shard_size=kw["shard_size"], decode=DecodeConfig(), detect=build(DetectConfig, kw),
                    embed=build(EmbedConfig, kw))
    return cfg, build(Resources, kw), score_config(kw)
