"""What the commands print: summaries of a run, a scoring, the audits and a dry run; apart from
what the commands do."""

from __future__ import annotations

import json

import click


def print_curation(s: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    src = s.get("threshold_source") or {}

    def th(key, fmt):
        v = s.get(key)
        return "n/a" if v is None else f"{fmt.format(v)} ({src.get(key, '?')})"

    click.echo(f"curation     {s['kept']} of {s['images']} images kept (scores {s['score_digest']}, {s['score_seconds']} s)")
    if s.get("previous_scoring") and s["previous_scoring"] != s["score_digest"]:
        click.echo(f"scoring      {s['score_digest']} is current now (was {s['previous_scoring']})")
    for c in s.get("changes", []):
        click.echo(f"changed      {c}")
    click.echo(f"thresholds   far angle {th('far_angle', '{:.1f} deg')}, duplicate cos {th('dup_cos', '{:.3f}')}, "
               f"merge cos {th('merge_cos', '{:.3f}')}")
    for reason, n in s["reasons"].items():
        click.echo(f"  {reason:<26} {n}")
    click.echo(f"identities   {s['identities']} scored, {s['identities_kept']} kept, {s['identities_dropped']} dropped, "
               f"{s['identities_review']} for review, {s['identities_merged']} merge candidates"
               + (f" ({s['merge']}: {s['persons']} persons)" if s.get("identities_merged") else ""))
    for w in s.get("warnings", []):
        click.secho(f"WARNING      {w}", fg="yellow", err=True)


def print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    click.echo(f"input        {s['input']}")
    click.echo(f"output       {s['out']}  (config {s['digest']})")
    click.echo(f"shards       {s['shards_done']}/{s['shards']} done")
    click.echo(f"images       {s['images']} of {s['items_planned']} planned; faces found {s['faces']}")
    if "identities" in s:
        click.echo(f"identities   {s['identities']} in, {s['identities_kept']} with kept images")
    click.echo(f"kept         {s['kept']}   rejected {s['rejected']}")
    for reason, n in s["reasons"].items():
        click.echo(f"  {reason:<22} {n}")
    if "this_run" in s:
        r = s["this_run"]
        spine = f" (the spine {r['spine_seconds']} s = {r['spine_images_per_s']} img/s)" if r.get("spine_images_per_s") else ""
        click.echo(f"this run     {r['images']} images in {r['seconds']} s = {r['images_per_s']} img/s{spine}")
    if s.get("worker_seconds"):
        click.echo("worker s     " + "  ".join(f"{k} {v}" for k, v in s["worker_seconds"].items()))
    if "curation" in s:
        print_curation(s["curation"], False)
    if "audit" in s:
        print_audit(s["audit"])


def print_audit(a: dict) -> None:
    click.echo(f"audits       {len(a['written'])} questions -> {a['dir']}")
    why: dict[str, list[str]] = {}
    for name, msg in a["skipped"].items():
        why.setdefault(msg.partition(": ")[2].split(". ")[0], []).append(name)
    for reason, names in why.items():
        click.echo(f"  skipped {', '.join(names)}: {reason}")
    if "report" in a:
        click.echo(f"report       {a['report']}")


def print_dry_run(s: dict, out: str, existing) -> None:
    from curate.survey import summary_lines

    for line in summary_lines(s):
        click.echo(line)
    mb = s["bytes"] / 1e6
    click.echo(f"bytes        {mb / 1e3:.3g} GB to read" if mb >= 1000 else f"bytes        {mb:.3g} MB to read"
               + (" (estimated from a sample of files)" if s["bytes_estimated"] else ""))
    if "sample" in s:
        smp = s["sample"]
        eta = int(s["eta_seconds"])
        when = f"{eta} s" if eta < 120 else f"{eta // 3600} h {eta % 3600 // 60} min"
        click.echo(f"sample       {smp['images']} images through the spine: {smp['seconds_per_image'] * 1000:.0f} ms each "
                   f"on one core (" + ", ".join(f"{k} {v}" for k, v in smp["reasons"].items()) + ")")
        click.echo(f"eta          ~{when} with {smp['workers']} workers on this machine, plus scoring")
    click.echo(f"output       {out}: " + ("resumes the run there" if existing else "nothing written (dry run)"))
