"""The same search as `bitscout search own_model.toml`, from Python:

python examples/own_model/search_own.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch

import bitscout

here = Path(__file__).parent
sys.path.insert(0, str(here))
from net import build, load  # noqa: E402

torch.manual_seed(0)  # what the config's `seed = 0` does before building the model
data = load(seed=0)
options = bitscout.TrainOptions(epochs=20, batch_size=64, learning_rate=3e-3, seed=0)
model = bitscout.train(build(width=32, blocks=2), data["train"], options)
result = bitscout.search(
    model, data["val"], here / "own_model.toml",
    objective={"accuracy": 1.0, "average_bitwidth": -0.01},
    strategy="tpe", trials=40, seed=0,
    out=sys.argv[1] if len(sys.argv) > 1 else "runs/own_model_api",
)  # fmt: skip
print("best config:", result.best.config)
print("best metrics:", result.best.metrics)
