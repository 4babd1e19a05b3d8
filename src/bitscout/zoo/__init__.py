"""Models and datasets: the built-in registries, plug-ins from files or packages, training."""
