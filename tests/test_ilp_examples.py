"""examples/ilp_digits_shuffled.toml, which bench_ilp.py compares strategies on, is the digits
MLP's space with only the order of its choice lists changed: same candidates, same optimum."""

import tomllib
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> dict:
    return tomllib.loads((EXAMPLES / name).read_text())


def _sorted_lists(node: object) -> object:
    if isinstance(node, dict):
        return {k: _sorted_lists(v) for k, v in node.items()}
    if isinstance(node, list):
        return sorted(node, key=repr)
    return node


def test_shuffled_digits_space_is_a_reordering_of_the_digits_mlp_space() -> None:
    plain, shuffled = _load("digits_mlp.toml"), _load("ilp_digits_shuffled.toml")
    assert _sorted_lists(shuffled) == _sorted_lists(plain)
    choices = shuffled["search"]["search_space"]["seed"]["default"]["config"]
    original = plain["search"]["search_space"]["seed"]["default"]["config"]
    moved = [k for k, v in choices.items() if len(v) > 1 and v != original[k]]
    # every list with a choice to make is out of its ascending order
    assert moved == ["data_in_width", "weight_width", "weight_frac_width"]
    assert all(v != sorted(v) for k, v in choices.items() if k in moved)
