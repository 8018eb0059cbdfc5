"""Concepts: ``concepts`` — per channel of a layer, its most relevant test images and their
channel-conditional relevance maps (CRP, :mod:`neurotomy.jobs.concepts`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurotomy import validate
from neurotomy.cli.common import MODEL, OUT_DIR, POSITIVE, Checked, add_common, add_data, data_for
from neurotomy.cli.common import add_model_options, load_model_arg
from neurotomy.errors import NeurotomyError
from neurotomy.scores.subspace import TARGETS


def channel_list(text: str, name: str | None = None) -> list[int]:
    """Comma-separated distinct channel indices (``0,5``); whether each exists is for the layer to say.

    Example:
        >>> channel_list("0,5")
        [0, 5]
    """
    items = [item.strip() for item in str(text).split(",")]
    if not all(items):
        raise validate.fail(name, f"expected channel indices like 0,5, got {text!r}")
    channels = validate.each(items, validate.non_negative_int, name)
    if len(set(channels)) != len(channels):
        raise validate.fail(name, f"a channel is listed twice in {text!r}; name each once")
    return channels


def channels_option(text: str) -> list[int]:
    """``--channels`` as argparse takes it: :func:`channel_list`, a bad value argparse's one-line error."""
    try:
        return channel_list(text)
    except NeurotomyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub) -> None:
    p = sub.add_parser("concepts", help="per channel of a layer: its most relevant test images and their CRP maps "
                                        "(concepts.png + concepts.json)")
    p.add_argument("model", type=MODEL, help="checkpoint or zoo:NAME")
    add_model_options(p)
    p.add_argument("--layer", type=Checked(validate.identifier, kind="layer name"),
                   help="module whose output channels are the concepts (see `neurotomy info MODEL`; default: the "
                        "last residual block, else the last conv)")
    p.add_argument("--channels", type=channels_option,
                   help="channel indices, e.g. 0,5 (default: the 4 most relevant channels on the test images)")
    p.add_argument("--out", required=True, type=OUT_DIR, help="directory to write concepts.png and concepts.json")
    p.add_argument("--n-reference", type=POSITIVE, default=8,
                   help="reference images per channel: the test images where it is most relevant (default 8)")
    p.add_argument("--target", choices=list(TARGETS), default="label",
                   help="relevance for each image's label (default) or the model's predicted class")
    add_data(p)
    add_common(p)
    p.set_defaults(func=cmd_concepts)


def cmd_concepts(args) -> None:
    from neurotomy.jobs.concepts import concepts_job

    model = load_model_arg(args)
    record = concepts_job(model, data_for(model, args, "test"), args.layer, args.channels, args.out,
                          n_reference=args.n_reference, target=args.target, batch_size=args.batch_size,
                          max_images=args.max_images, seed=args.seed, quiet=args.quiet, model_name=args.model)
    for channel, refs in record["channels"].items():
        classes = ", ".join(f"{name} ×{count}" for name, count in refs["class_counts"].items())
        print(f"channel {channel}: {len(refs['indices'])} reference images — {classes}")
    print(f"searched {record['images']} test images of {record['layer']}; wrote {Path(args.out) / 'concepts.png'} "
          "and concepts.json")
