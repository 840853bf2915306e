"""Command line: ``python -m atft.registry (--registry PATH | --config YAML) list|show|verify|rollback``.

Exit status 0 on success, 1 when the registry refuses (unknown version, nothing published, a failed
verification), 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from atft.config import ConfigError, load_config
from atft.registry.errors import EmptyRegistry, RegistryError
from atft.registry.registry import Registry, VersionRecord

DEFAULT_METRIC = "rank_ic_5d"


def main(argv: Sequence[str] | None = None, prog: str = "python -m atft.registry") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        if args.config is not None:
            config = load_config(args.config)
            registry, metric = Registry(config.registry.path), config.evaluation.champion_metric
        else:
            registry, metric = Registry(args.registry), DEFAULT_METRIC
        return args.run(registry, args, args.metric or metric)
    except (RegistryError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Inspect the checkpoint registry.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", metavar="PATH", help="registry directory")
    where.add_argument("--config", metavar="YAML", help="pipeline config whose registry.path to use")
    parser.add_argument("--metric", help="metric shown by list (default: the config's champion metric, or rank_ic_5d)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="every published version, oldest first; * marks the champion")
    listing.set_defaults(run=_list)
    show = commands.add_parser("show", help="one version's metadata, windows, metrics and gates")
    show.add_argument("version", nargs="?", help="version id (default: the champion)")
    show.set_defaults(run=_show)
    verify = commands.add_parser(
        "verify", help="check every file's sha256 (all versions and champion.json's consistency by default)"
    )
    verify.add_argument("version", nargs="?", help="version id (default: every version)")
    verify.set_defaults(run=_verify)
    rollback = commands.add_parser("rollback", help="make the previous champion (or --to VERSION) the champion")
    rollback.add_argument("--to", metavar="VERSION", help="roll back to this version instead")
    rollback.set_defaults(run=_rollback)
    return parser


def _list(registry: Registry, args: argparse.Namespace, metric: str) -> int:
    records = _published(registry)
    rows = [["", "VERSION", "CREATED (UTC)", "MODEL", metric, "GATES", ""]]
    for r in records:
        note = f"DAMAGED: {r.problems[0]} (run verify)" if r.problems else ""
        gates = "pass" if r.passed else "FAIL"
        rows.append(
            ["*" if r.champion else "", r.version, _created(r), _model(r), _number(r.metrics.get(metric)), gates, note]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.rjust(w) if i == 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
    champion = registry.champion().champion
    print(f"\n{len(records)} version(s); champion: {champion or 'none'} (*)")
    return 0


def _show(registry: Registry, args: argparse.Namespace, metric: str) -> int:
    r = registry.show(args.version)
    meta, model = r.metadata, r.model
    problems = registry.verify(r.version)
    lines = [("version", f"{r.version}{'  (champion)' if r.champion else ''}"), ("created", f"{_created(r)} UTC")]
    horizons = " ".join(f"{h}d" for h in model.get("horizons", []))
    params = f"; {model['parameters']:,} parameters" if "parameters" in model else ""
    lines.append(("model", f"{_model(r)}: {model.get('width')} inputs; horizons {horizons}{params}"))
    lines.append(("manifest", f"{meta.get('manifest_sha256')} (feature table {meta.get('feature_table')})"))
    windows = meta.get("windows", {})
    for i, name in enumerate(("train", "valid", "eval")):
        span = f"{windows.get(f'{name}_start')} .. {windows.get(f'{name}_end')}"
        lines.append(("windows" if i == 0 else "", f"{name:<6} {span}"))
    lines.append(("data", f"fingerprint {meta.get('data_fingerprint')}"))
    lines.append(("code", meta.get("code_version") or "unknown (published outside a git checkout)"))
    libraries = ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items() if v)
    lines += _block("libraries", textwrap.wrap(libraries, 90))
    lines.append(("staged from", str(meta.get("staged_from"))))
    if "best_epoch" in model:
        collapsed = "  COLLAPSED" if model.get("collapsed") else ""
        epochs = ", ".join(map(str, model.get("member_best_epochs") or [model["best_epoch"]]))
        best = f"best epoch{'s' if ',' in epochs else ''} {epochs}"
        training = f"{best}, validation RankIC {_number(model.get('best_valid_rank_ic'))}"
        lines.append(("training", training + collapsed))
    lines += _block("metrics", [f"{k:<24} {_number(v)}" for k, v in r.metrics.items()])
    gate_lines = [_gate_line(g) for g in r.gates.get("results", [])]
    gate_lines += [f"{k}: {_text(v)}" for k, v in r.gates.items() if k not in ("passed", "results")]
    lines += _block("gates", ["passed" if r.passed else "FAILED", *gate_lines])
    verdict = ["every file matches its recorded sha256"] if not problems else ["FAILED", *problems]
    lines += _block("checksums", verdict)
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        print(f"{label:<{width}}  {text}")
    return 0 if not problems else 1


def _verify(registry: Registry, args: argparse.Namespace, metric: str) -> int:
    results = {args.version: registry.verify(args.version)} if args.version else registry.verify_all()
    for name, problems in results.items():
        print(f"{name}  {'FAILED' if problems else 'ok'}")
        for problem in problems:
            print(f"  - {problem}")
    return 1 if any(results.values()) else 0


def _rollback(registry: Registry, args: argparse.Namespace, metric: str) -> int:
    before = registry.champion().champion
    after = registry.rollback(args.to)
    print(f"champion is now {after} (was {before})")
    return 0


def _published(registry: Registry) -> list[VersionRecord]:
    records = registry.versions()
    if not records:
        raise EmptyRegistry(registry.storage.location())
    return records


def _block(label: str, texts: list[str]) -> list[tuple[str, str]]:
    """Label the first line only, so that multi-line sections read as one block."""
    return [(label if i == 0 else "", text) for i, text in enumerate(texts or ["none recorded"])]


def _gate_line(gate: Any) -> str:
    if not isinstance(gate, dict) or "gate" not in gate:
        return _text(gate)
    value = f"  (value {_number(gate['value'])})" if "value" in gate else ""
    return f"{'PASS' if gate.get('passed') else 'FAIL'}  {gate['gate']}{value}"


def _created(r: VersionRecord) -> str:
    created = str(r.metadata.get("created_at", "?"))
    return created.replace("T", " ")[:19]


def _model(r: VersionRecord) -> str:
    name = str(r.metadata.get("model") or r.model.get("model") or "?")
    members = r.model.get("config", {}).get("ensemble", 1)
    return f"{name} (seed ensemble of {members})" if members > 1 else name


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _text(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


if __name__ == "__main__":
    sys.exit(main())
