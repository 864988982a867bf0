"""The ``seedr1`` command. Subcommands parse arguments and call into the packages; no logic lives here."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from seedr1.storage import StorageError

# name -> (help, add_arguments(parser), run(args) -> exit code); each area registers its own below.
_COMMANDS: dict[str, dict[str | None, tuple[str, Callable, Callable]]] = {}


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low`` (a size of 0 or a negative count is a usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def command(group: str, name: str | None, help: str, add_args: Callable, run: Callable) -> None:
    """Register ``seedr1 GROUP NAME``: ``add_args(parser)`` declares its arguments, ``run(args)`` returns the exit code.

    ``name=None`` registers ``GROUP`` itself as a top-level command (``seedr1 score``); it then has no subcommands.
    """
    commands = _COMMANDS.setdefault(group, {})
    if (name is None and commands) or None in commands:
        raise ValueError(f"seedr1 {group} is a command by itself; it cannot also have subcommands")
    commands[name] = (help, add_args, run)


# ---- seedr1 model ... ---------------------------------------------------------------------------------------------
def _tiny_args(p: argparse.ArgumentParser) -> None:
    from seedr1.model.tiny import PRESETS

    p.add_argument("--out", required=True, help="output folder (a Hugging Face checkpoint)")
    p.add_argument("--family", choices=["qwen2-vl", "qwen2.5-vl"], help="architecture (default: the size's, qwen2-vl)")
    p.add_argument("--seed", type=int, help="weights and tokenizer seed (default: the size's, 0)")
    p.add_argument("--size", default="tiny", choices=list(PRESETS),
                   help="named shape (tiny: ~0.6 M parameters; 0.5b: Qwen2-0.5B's text stack, ~0.55 B)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TinyModelConfig field of the size, e.g. num_layers=3 (repeatable)")


def _tiny_run(args) -> int:
    from seedr1.model.tiny import build_tiny_model, tiny_config

    given = {k: v for k, v in (("family", args.family), ("seed", args.seed)) if v is not None}
    cfg = tiny_config(args.size, args.overrides, **given)
    out = build_tiny_model(args.out, cfg)
    extra = f", {' '.join(args.overrides)}" if args.overrides else ""
    print(f"{args.size} {cfg.family} model (seed {cfg.seed}{extra}) written to {out}")
    return 0


command("model", "tiny", "build the tiny offline Qwen2-VL / Qwen2.5-VL model (random weights, local tokenizer)", _tiny_args, _tiny_run)


def _warmup_args(p: argparse.ArgumentParser) -> None:
    from seedr1.config import WarmupConfig

    d = WarmupConfig()
    p.add_argument("--model", default="tiny", help="starting checkpoint (default: the tiny model)")
    p.add_argument("--data", required=True, help="SEED-Bench-R1 root with the chain-of-thought file (e.g. synthetic)")
    p.add_argument("--out", required=True, help="output folder (a Hugging Face checkpoint)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--frame-size", type=int, default=d.frame_size)


def _warmup_run(args) -> int:
    from seedr1.config import WarmupConfig
    from seedr1.model.loading import resolve_checkpoint
    from seedr1.sft.warmup import perception_warmup

    cfg = WarmupConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       frame_size=args.frame_size)
    out = perception_warmup(resolve_checkpoint(args.model), args.data, args.out, cfg)
    print(f"perception warm-up written to {out}")
    return 0


command("model", "warmup", "perception warm-up: SFT on the CoT targets with random answer letters (CPU stand-in "
        "for a pretrained VLM)", _warmup_args, _warmup_run)


# ---- seedr1 data ... ----------------------------------------------------------------------------------------------
def _synth_args(p: argparse.ArgumentParser) -> None:
    from seedr1.data.synthetic import SynthSpec

    d = SynthSpec()
    p.add_argument("--out", required=True, help="dataset root to write (official SEED-Bench-R1 layout)")
    p.add_argument("--seed", type=int, default=d.seed)
    for split in ("train", "l1", "l2", "l3"):
        p.add_argument(f"--{split}", type=_count(0), default=getattr(d, split), help=f"records in {split}")
    p.add_argument("--frame-size", type=_count(1), default=d.frame_size, help="frame and image side in pixels")


def _synth_run(args) -> int:
    from seedr1.data.synthetic import SynthSpec, write_synthetic

    spec = SynthSpec(seed=args.seed, train=args.train, l1=args.l1, l2=args.l2, l3=args.l3,
                     frame_size=args.frame_size)
    counts = write_synthetic(args.out, spec)
    print(f"synthetic SEED-Bench-R1-mini written to {args.out}: {counts}")
    return 0


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset root (folder or s3://bucket/prefix)")
    p.add_argument("--rejects", help="write rejected records here as JSONL")
    p.add_argument("--workers", type=_count(1), default=2, help="decode threads")


def _validate_run(args) -> int:
    from seedr1.data.validate import validate_root, write_rejects
    from seedr1.storage import get_storage, join

    storage = get_storage(args.root)
    if storage.exists(join(args.root, "manifest.json")):
        print(f"seedr1: error: {args.root} is a packed data set (manifest.json); validate the root it was packed from "
              "(the data pipeline rejects bad records in shards as it reads them)", file=sys.stderr)
        return 2
    report = validate_root(args.root, workers=args.workers)
    print(report.table())
    if not report.files:
        where = join(args.root, "annotations")
        print(f"FAILED: no annotation files under {where}" + ("" if storage.exists(args.root) or
                                                             args.root.startswith("s3://") else
                                                             f" ({args.root} does not exist)"))
        return 1
    for r in report.rejects[:20]:
        print(f"  {r['file']}:{r['line']} sample_id={r['sample_id']} field={r['field']}: {r['reason']}")
    if len(report.rejects) > 20:
        print(f"  ... and {len(report.rejects) - 20} more")
    if args.rejects:
        write_rejects(report, args.rejects)
        print(f"rejects: {args.rejects}")
    print("OK" if report.ok else f"FAILED: {len(report.rejects)} bad records")
    return 0 if report.ok else 1


def _pack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset root in the official layout (folder or s3://)")
    p.add_argument("--to", required=True, dest="dest", help="destination folder or s3://bucket/prefix")
    p.add_argument("--shard-size", type=_count(1), default=64 << 20, help="target shard size in bytes")


def _pack_run(args) -> int:
    from seedr1.data.shards import pack

    r = pack(args.root, args.dest, shard_size=args.shard_size)
    print(f"packed {r.records} records into {r.shards} shards ({r.bytes / 1e6:.1f} MB): "
          f"{r.uploaded} written, {r.skipped} already there; manifest {r.manifest}")
    return 0


command("data", "synth", "write a synthetic SEED-Bench-R1-mini (official layout and schema)", _synth_args, _synth_run)
command("data", "validate", "check every record and its media; rejects as JSONL", _validate_args, _validate_run)
command("data", "pack", "pack records + media into tar shards with a manifest (folder or s3://)", _pack_args, _pack_run)


# ---- seedr1 score --------------------------------------------------------------------------------------------------
def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", nargs="+", required=True, help="validation / LongVideoBench annotation files")
    p.add_argument("--predictions", required=True, help='JSONL of {"sample_id": ..., "response": "..."}')
    p.add_argument("--out", help="also write the JSON summary here")


def _score_run(args) -> int:
    import json

    from seedr1.evaluate.scoring import score_files
    from seedr1.storage import get_storage

    text = json.dumps(score_files(args.annotations, args.predictions), indent=1)  # ScoringError: nothing written
    print(text)
    if args.out:
        get_storage(args.out).write_bytes(args.out, (text + "\n").encode("utf-8"))
    return 0


command("score", None, "score a predictions JSONL against annotations with the official rule (accuracy by level "
        "and domain, reasoning consistency)", _score_args, _score_run)


# ---- seedr1 dashboards ---------------------------------------------------------------------------------------------
DASHBOARDS_DIR = "k8s/charts/seedr1/dashboards"  # the committed copies the Helm chart ships


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=DASHBOARDS_DIR, help=f"folder for the JSON files (default {DASHBOARDS_DIR})")
    p.add_argument("--no-ray", action="store_true", help="leave out Ray's own dashboards")


def _build_run(args) -> int:
    from seedr1.metrics.dashboards import write_dashboards

    for path in write_dashboards(args.out, include_ray=not args.no_ray):
        print(path)
    return 0


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="service account / API token (or env GRAFANA_TOKEN)")
    auth.add_argument("--basic-auth", help="user:password")
    p.add_argument("--folder", default="seedr1", help="Grafana folder (found or created by title)")
    p.add_argument("--no-ray", action="store_true", help="leave out Ray's own dashboards")


def _push_run(args) -> int:
    import os

    from seedr1.metrics.dashboards import build_dashboards
    from seedr1.metrics.grafana_push import GrafanaPushError, push_dashboards

    basic = tuple(args.basic_auth.split(":", 1)) if args.basic_auth else None
    if basic is not None and len(basic) != 2:
        raise ValueError("--basic-auth takes user:password")
    try:
        uids = push_dashboards(args.url, build_dashboards(not args.no_ray), token=args.token or
                               os.environ.get("GRAFANA_TOKEN"), basic_auth=basic, folder=args.folder)
    except GrafanaPushError as e:
        print(f"seedr1: error: {e}", file=sys.stderr)
        return 1
    print(f"pushed {len(uids)} dashboards to {args.url} (folder {args.folder}): {', '.join(uids)}")
    return 0


command("dashboards", "build", "write the Grafana dashboards (training, data, evaluation, serving, Ray's own)",
        _build_args, _build_run)
command("dashboards", "push", "create or overwrite the dashboards in a Grafana through its HTTP API", _push_args,
        _push_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedr1", description="seedr1: video MLLM post-training on Ray")
    groups = parser.add_subparsers(dest="group", required=True)
    for group, commands in _COMMANDS.items():
        if None in commands:  # a top-level command: seedr1 GROUP
            help, add_args, run = commands[None]
            p = groups.add_parser(group, help=help, description=help)
            add_args(p)
            p.set_defaults(_run=run)
            continue
        gp = groups.add_parser(group).add_subparsers(dest="command", required=True)
        for name, (help, add_args, run) in commands.items():
            p = gp.add_parser(name, help=help, description=help)
            add_args(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (StorageError, ValueError, OSError) as e:  # user errors (a missing file, a folder given as a file, ...)
        print(f"seedr1: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
