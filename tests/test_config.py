"""Config loading: every error names the key, the rule and the value."""

from pathlib import Path

import pytest

from bitscout.cli.config import Config, load_config
from bitscout.errors import ConfigError
from bitscout.zoo.models import build_model

EXAMPLES = Path(__file__).parent.parent / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_examples_load(name):
    cfg = load_config(EXAMPLES / name)
    assert cfg.model and cfg.dataset


def test_defaults_and_values(tmp_path):
    cfg = load_config(
        write(
            tmp_path, 'model = "jsc-tiny"\ndataset = "jsc"\nseed = 7\ndataset_path = "data/x.csv"\n'
        )
    )
    assert (cfg.model, cfg.dataset, cfg.seed) == ("jsc-tiny", "jsc", 7)
    assert cfg.dataset_path == str((tmp_path / "data/x.csv").resolve())  # relative to the file
    assert cfg.quantize is None and dict(cfg.search) == {}


def test_mase_only_keys_are_accepted(tmp_path):
    text = (
        'task = "cls"\naccelerator = "gpu"\nproject = "p"\nlog_every_n_steps = 5\n'
        'load_name = "x.ckpt"\nload_type = "pl"\n[transform]\nstyle = "graph"\n'
    )
    assert load_config(write(tmp_path, text)).model == "mlp"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('modle = "mlp"', "modle: unknown key; did you mean 'model'?"),
        ("batch_size = 0", "batch_size: must be an integer >= 1, got 0"),
        ('batch_size = "64"', "batch_size: must be an integer >= 1, got '64'"),
        ("max_epochs = 2.5", "max_epochs: must be an integer >= 1, got 2.5"),
        ("learning_rate = -1.0", "learning_rate: must be a number >= 0.0, got -1.0"),
        ("seed = -3", "seed: must be an integer >= 0, got -3"),
        ("seed = true", "seed: must be an integer >= 0, got True"),
        ("model = 3", "model: must be a string, got 3"),
        ("dataset_options = 3", "dataset_options: must be a table, got 3"),
        (
            "[passes.quantise]\nby = 'type'",
            "passes.quantise: unknown key; did you mean 'quantize'?",
        ),
        ("[passes.quantize]\nby = 'layer'", 'passes.quantize.by: must be "name" or "type"'),
        (
            "[passes.quantize.linear]\nname = 'integer'",
            "passes.quantize.linear: must be a table holding exactly one `config` table",
        ),
        (
            "[passes.quantize.linear.config]\nname = 'integer'\nweight_width = 0",
            "passes.quantize.linear.config.weight_width: must be an integer in 1..32, got 0",
        ),
        (
            "[passes.quantize.linear.config]\nname = 'integer'\nweight_width = 33",
            "passes.quantize.linear.config.weight_width: must be an integer in 1..32, got 33",
        ),
        (
            "[passes.quantize.linear.config]\nname = 'integer'\nweight_width = 8\n"
            "weight_frac_width = 'x'",
            'passes.quantize.linear.config.weight_frac_width: must be an integer in -64..64 or "NA"',
        ),
        (
            "[passes.quantize.linear.config]\nname = 'minifloat'",
            "passes.quantize.linear.config.name: must be one of ['binary', 'block_fp', 'integer',",
        ),
        (
            "[passes.quantize.linear.config]\nweight_width = 8",
            "passes.quantize.linear.config.name: is required",
        ),
        (
            "[passes.quantize.linear.config]\nname = 'integer'\nweight_widht = 8",
            "passes.quantize.linear.config.weight_widht: unknown field",
        ),
        (
            "[passes.quantize.linear.config]\nname = 'integer'\nrounding = 'nearest'",
            "passes.quantize.linear.config.rounding: must be one of",
        ),
    ],
)
def test_config_errors(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message


def test_broken_toml_names_the_file(tmp_path):
    path = write(tmp_path, "model = \n")
    with pytest.raises(ConfigError, match=r"c\.toml: invalid TOML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the file"):
        load_config("nope.toml")


def test_unknown_model_lists_known():
    pattern = r"model: unknown model; did you mean 'jsc-s'\?; known: cnn, jsc-s, jsc-tiny"
    with pytest.raises(ConfigError, match=pattern):
        build_model("jsc-huge")


def test_unknown_model_option():
    with pytest.raises(
        ConfigError, match=r"model_options.depth: unknown option for mlp; known: hidden"
    ):
        build_model("mlp", depth=3)


def test_jsc_model_on_wrong_data():
    with pytest.raises(ConfigError, match="jsc-tiny takes 16 features and 5 classes"):
        build_model("jsc-tiny", num_features=64, num_classes=10)


def test_bad_hidden_sizes():
    with pytest.raises(
        ConfigError, match=r"model_options.hidden: must be a positive integer, got 0"
    ):
        build_model("mlp", hidden=[32, 0])


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.model = "cnn"  # type: ignore[misc]
