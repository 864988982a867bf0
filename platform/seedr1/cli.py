"""The ``seedr1`` command. Subcommands parse arguments and call into the packages; no logic lives here."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

# name -> (help, add_arguments(parser), run(args) -> exit code); each area registers its own below.
_COMMANDS: dict[str, dict[str, tuple[str, Callable, Callable]]] = {}


def command(group: str, name: str, help: str):
    def wrap(fn_pair):
        add_args, run = fn_pair
        _COMMANDS.setdefault(group, {})[name] = (help, add_args, run)
        return fn_pair
    return wrap


# ---- seedr1 model ... ---------------------------------------------------------------------------------------------
def _tiny_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (a Hugging Face checkpoint)")
    p.add_argument("--family", default="qwen2-vl", choices=["qwen2-vl", "qwen2.5-vl"])
    p.add_argument("--seed", type=int, default=0)


def _tiny_run(args) -> int:
    from seedr1.config import TinyModelConfig
    from seedr1.model.tiny import build_tiny_model

    out = build_tiny_model(args.out, TinyModelConfig(family=args.family, seed=args.seed))
    print(f"tiny {args.family} model (seed {args.seed}) written to {out}")
    return 0


command("model", "tiny", "build the tiny offline Qwen2-VL / Qwen2.5-VL model (random weights, local tokenizer)")(
    (_tiny_args, _tiny_run))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedr1", description="seedr1: video MLLM post-training on Ray")
    groups = parser.add_subparsers(dest="group", required=True)
    for group, commands in _COMMANDS.items():
        gp = groups.add_parser(group).add_subparsers(dest="command", required=True)
        for name, (help, add_args, run) in commands.items():
            p = gp.add_parser(name, help=help, description=help)
            add_args(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
