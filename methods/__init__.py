"""One folder a method: a config dataclass with the paper's defaults, and its trainer."""
