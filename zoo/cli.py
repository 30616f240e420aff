"""The ``zoo`` command: list, eval, leaderboard, fit (LightningCLI), export, push."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

_DEVICE_HELP = "where the model runs: cpu, cuda, cuda:N, mps or auto (default cpu)"


def _cmd_list(args) -> int:
    import zoo
    from zoo.models import architectures, model_info

    if not args.archs:
        from zoo.models import weights_location

        names = zoo.list_models(args.pattern, pretrained=True)
        head = "checkpoint (zoo.load NAME)"
        w = max([len(head), *map(len, names)])  # the longest name sets the column
        print(f"{head:{w}s} {'task':24s} {'dataset':18s} weights")
        for n in names:
            info = model_info(n)
            where = weights_location(n) or "Hub (downloaded on first load)"
            print(f"{n:{w}s} {info.get('task', ''):24s} {info.get('dataset', ''):18s} {where}")
        if not names:
            print(f"(no pretrained checkpoint matches {args.pattern!r})")
    if args.archs or args.all:
        if not args.archs:
            print()
        archs = architectures()
        names = zoo.list_models(args.pattern)
        head = "architecture (untrained)"
        w = max([len(head), *map(len, names)])
        print(f"{head:{w}s} {'family':16s} {'task':24s} pretrained")
        for n in names:
            meta = archs.get(n, {})
            ws = len(zoo.list_models(f"{n}.*", pretrained=True))
            print(f"{n:{w}s} {meta.get('family', ''):16s} {meta.get('task', ''):24s} {ws or '-'}")
    return 0


def _cmd_fit(argv: list[str], debug: bool = False) -> int:
    """LightningCLI; a user error (a bad recipe value, a refused checkpoint, a missing file)
    ends in one line and exit status 2, as for the other commands (``zoo --debug fit`` shows
    the traceback)."""
    import pickle

    from zoo.training import run_cli

    try:
        run_cli(["fit", *argv])
    except pickle.UnpicklingError:
        if debug:
            raise
        print(
            "zoo fit: error: a checkpoint (--ckpt_path) was refused: it does not load with "
            "weights_only=True (tensors and plain data only; pickled code is never run)",
            file=sys.stderr,
        )
        return 2
    except (ValueError, TypeError, FileNotFoundError, PermissionError) as e:
        if debug:
            raise
        first = str(e).strip() or type(e).__name__
        print(f"zoo fit: error: {first}", file=sys.stderr)
        return 2
    return 0


def _cmd_eval(args) -> int:
    from zoo.evaluate import evaluate, print_results

    res = evaluate(
        args.name,
        tol=args.tol,
        data_dir=args.data_dir,
        split=args.split,
        limit=args.limit,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        sample=args.sample,
        device=args.device,
        bf16=args.bf16,
        predictions=args.predictions,
    )
    print_results([res])
    if args.predictions:
        print(f"wrote {args.predictions}")
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _cmd_leaderboard(args) -> int:
    from zoo.evaluate import leaderboard

    skipped: list[dict] = []
    leaderboard(
        skipped=skipped,
        data_dir=args.data_dir,
        out=args.out,
        limit=args.limit,
        sample=args.sample,
        device=args.device,
    )
    return 1 if skipped else 0  # the partial table is written; scripts still notice


def _cmd_export(args) -> int:
    from zoo.training import export_checkpoint

    out = export_checkpoint(
        args.ckpt, args.name, out_dir=args.out_dir, recipe=args.recipe, force=args.force
    )
    print(f"exported {args.ckpt} -> {out}")
    return 0


def _cmd_shrink_state(args) -> int:
    from zoo.training import shrink_state

    sizes = shrink_state(args.src, args.dst, moments=args.moments, in_place=args.in_place)
    print(
        f"{args.src} ({sizes['before'] / 1e6:.1f} MB) -> {args.dst} ({sizes['after'] / 1e6:.1f} "
        f"MB): optimizer moments in {args.moments}; resume from it as from any last.ckpt"
    )
    return 0


def _cmd_card(args) -> int:
    import os
    from pathlib import Path

    import zoo
    from zoo import cards
    from zoo.cards import write_card

    if args.name not in zoo.list_models(pretrained=True):
        raise ValueError(
            f"zoo card measures the zoo's registered checkpoints (zoo list), and {args.name!r} is "
            "not one; for your own checkpoint folder use `zoo eval FOLDER --json out.json`"
        )
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out}: not a folder")
        out.mkdir(parents=True, exist_ok=True)
        cards.CARDS = out
    cards.CARDS.mkdir(parents=True, exist_ok=True)
    if not os.access(cards.CARDS, os.W_OK):
        raise PermissionError(f"zoo card: cannot write in {cards.CARDS}")

    try:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise ValueError(
            f"--budgets {args.budgets!r}: give comma-separated positive integers, e.g. 2,4,8"
        ) from None
    if any(b < 1 for b in budgets):
        raise ValueError(f"--budgets {args.budgets!r}: every budget must be >= 1")
    full = None
    if args.full_solve.lower() != "none":
        try:
            it, tol = args.full_solve.split(",")
            full = (int(it), float(tol))
        except ValueError:
            raise ValueError(
                f"--full-solve {args.full_solve!r}: give MAX_ITER,TOL (e.g. 30,1e-4) or none"
            ) from None
    write_card(
        args.name,
        budgets=budgets,
        full=full,
        data_dir=args.data_dir,
        limit=args.limit,
        remeasure=not args.rerender,
    )
    return 0


def _cmd_docs(args) -> int:
    from zoo.docs import ROOT, stale, write_all

    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        if bad:
            print(
                "zoo docs: run `zoo docs` to render them from the stored results", file=sys.stderr
            )
        return 1 if bad else 0
    changed = write_all()
    for p in changed:
        print(f"wrote {p.relative_to(ROOT)}")
    print(f"{len(changed)} file(s) changed" if changed else "everything was up to date")
    return 0


def _cmd_generate(args) -> int:
    import zoo
    from zoo.text import generate_text

    model = zoo.load(
        args.name, **({"max_iter": args.max_iter} if args.max_iter is not None else {})
    )

    def show(piece: str) -> None:  # stream: each token as soon as it is sampled
        print(piece, end="", flush=True)

    generate_text(
        model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed, show
    )
    print()
    return 0


def _cmd_push(args) -> int:
    from zoo.hub import push

    url = push(args.name, args.repo_id, private=args.private)
    print(f"pushed {args.name} -> {url}")
    return 0


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _positive_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    return v


def main(argv: list[str] | None = None) -> int:
    import zoo

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fit"] or argv[:2] == ["--debug", "fit"]:  # the rest is LightningCLI's
        debug = argv[0] == "--debug"
        return _cmd_fit(argv[2:] if debug else argv[1:], debug=debug)

    p = argparse.ArgumentParser(
        prog="zoo", description="implicit-zoo: deep implicit models with weights"
    )
    p.add_argument("--version", action="version", version=f"implicit-zoo {zoo.__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    s = sub.add_parser("list", help="list the pretrained checkpoints (and architectures)")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'mdeq*'")
    s.add_argument(
        "--pretrained", action="store_true", help="the pretrained checkpoints (the default)"
    )
    s.add_argument("--archs", action="store_true", help="the architectures (entry points) only")
    s.add_argument("--all", action="store_true", help="checkpoints, then architectures")

    s = sub.add_parser("eval", help="evaluate a pretrained model on its test set")
    s.add_argument("name")
    s.add_argument("--data-dir", default=None, help="dataset root (default $ZOO_DATA_DIR)")
    s.add_argument(
        "--split",
        default="test",
        help="test (default); for image models also val (the training images the recipes hold "
        "out, seed 0; a card's data line says whether a late stage trained on them too) or "
        "train (the rest)",
    )
    s.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="evaluate N units only: images, tokens or series, by task (the JSON's 'unit'); "
        "a fixed subset, stated in the output (class-stratified, seed 0, for image "
        "classification; else the first N)",
    )
    s.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help="test-time budget: solver iterations (DEQs) or fixed-grid steps (ODE models)",
    )
    s.add_argument(
        "--tol",
        type=_positive_float,
        default=None,
        help="test-time tolerance: the solver's (DEQs) or rtol=atol (adaptive ODE models)",
    )
    s.add_argument("--batch-size", type=_positive_int, default=200, help="images per batch")
    s.add_argument(
        "--sample", action="store_true", help="use the small evaluation sample shipped in the repo"
    )
    s.add_argument("--json", default=None, help="write the results to this JSON file")
    s.add_argument(
        "--predictions", default=None, metavar="CSV",
        help="write each example's prediction to this CSV file (series classification: "
        "record id, label, probability)",
    )  # fmt: skip
    s.add_argument("--bf16", action="store_true", help="bfloat16 autocast (solvers stay in fp32)")
    s.add_argument("--device", default="cpu", help=_DEVICE_HELP)

    s = sub.add_parser("leaderboard", help="evaluate every pretrained model; markdown + JSON")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--out", default="leaderboard.md")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--sample", action="store_true")
    s.add_argument("--device", default="cpu", help=_DEVICE_HELP)

    sub.add_parser("fit", help="train with LightningCLI: zoo fit --config recipes/...yaml")

    s = sub.add_parser("export", help="turn a Lightning checkpoint into checkpoints/<name>/")
    s.add_argument("ckpt")
    s.add_argument("--name", required=True, help="arch.tag (a folder name, never a path)")
    s.add_argument("--out-dir", default=None, help="the folder to write (default checkpoints/NAME)")
    s.add_argument("--recipe", default=None)
    s.add_argument(
        "--force", action="store_true", help="replace an existing checkpoint folder of that name"
    )

    s = sub.add_parser(
        "shrink-state",
        help="store a Lightning state's optimizer moments in bfloat16 (a smaller file to resume "
        "from; weights, schedule and loop state stay exact)",
    )
    s.add_argument("src", help="a Lightning checkpoint, e.g. runs/<run>/checkpoints/last.ckpt")
    s.add_argument("dst", help="where to write the smaller state, e.g. resume/<run>_last.ckpt")
    s.add_argument("--moments", default="bfloat16", choices=["bfloat16"])
    s.add_argument(
        "--in-place", action="store_true", help="allow DST to be SRC (replaces the full state)"
    )

    s = sub.add_parser(
        "card", help="measure a checkpoint (a solver-budget sweep for DEQs); write its model card"
    )
    s.add_argument("name", help="a registered checkpoint (zoo list)")
    s.add_argument(
        "--out",
        default=None,
        help="the folder for NAME.yaml, NAME.md and the figures (default model_cards/)",
    )
    s.add_argument("--budgets", default="2,4,6,8,12", help="comma-separated max_iter values")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--limit", type=int, default=None)
    s.add_argument(
        "--rerender",
        action="store_true",
        help="re-render the card from its data file (model_cards/NAME.yaml), measuring nothing",
    )
    s.add_argument(
        "--full-solve",
        default="30,1e-4",
        help="'MAX_ITER,TOL' of the extra full-solve row of the sweep, or 'none'",
    )

    s = sub.add_parser("generate", help="sample text from a pretrained language model")
    s.add_argument("name")
    s.add_argument("--prompt", required=True)
    s.add_argument("--max-new-tokens", type=_positive_int, default=50)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--max-iter", type=_positive_int, default=None, help="solver budget (DEQ models)"
    )

    s = sub.add_parser(
        "docs",
        help="render the model cards, the README's checkpoint table, the leaderboard page and "
        "the benchmark summary from the stored results (measures nothing)",
    )
    s.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a rendered file is stale"
    )

    s = sub.add_parser("push", help="upload weights + model card to the Hugging Face Hub")
    s.add_argument("name")
    s.add_argument("--repo-id", required=True)
    s.add_argument("--private", action="store_true")

    args = p.parse_args(argv)
    if args.cmd is None:
        p.print_help()
        return 0
    handler = {
        "list": _cmd_list,
        "eval": _cmd_eval,
        "leaderboard": _cmd_leaderboard,
        "export": _cmd_export,
        "shrink-state": _cmd_shrink_state,
        "card": _cmd_card,
        "docs": _cmd_docs,
        "generate": _cmd_generate,
        "push": _cmd_push,
    }[args.cmd]
    try:
        return handler(args)
    except BrokenPipeError:  # `zoo list | head`: the reader left; stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, PermissionError) as e:
        if args.debug:
            raise
        print(f"zoo {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
