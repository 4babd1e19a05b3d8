"""`bitscout space CONFIG`: the layers, dimensions and size of a search space."""

import argparse

from rich.table import Table

from bitscout.cli.common import console


def cmd_space(args: argparse.Namespace) -> int:
    import torch

    from bitscout.cli.build import Overrides, check_search, load_data, make_model
    from bitscout.cli.config import load_config
    from bitscout.quant.apply import fx_name, quantizable_layers
    from bitscout.quant.layers import TYPE_NAMES
    from bitscout.quant.space import parse_space

    cfg = load_config(args.config)
    check_search(cfg, Overrides())
    data = load_data(cfg)
    model = make_model(cfg, data)
    space = parse_space(cfg.search.get("search_space", {}), model)
    layers = Table(title=f"quantizable layers of {cfg.model}")
    for column in ("layer", "module", "type", "shape"):
        layers.add_column(column)
    for path, layer in quantizable_layers(model).items():
        shape = tuple(layer.weight.shape) if isinstance(layer.weight, torch.Tensor) else ()
        layers.add_row(fx_name(path), path, TYPE_NAMES[type(layer)], str(shape))
    console.print(layers)
    dims = Table(title=f"search dimensions (by {space.by})")
    for column in ("dimension", "choices", "searched when name is"):
        dims.add_column(column, no_wrap=column == "dimension")
    for d in space.dimensions:
        dims.add_row(d.name, ", ".join(map(str, d.choices)), ", ".join(d.formats) or "any")
    console.print(dims)
    console.print(f"{space.size} candidates")
    if space.skipped_note is not None:
        console.print(space.skipped_note, highlight=False)
    return 0
