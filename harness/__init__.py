"""peft-bench: a uniform harness for comparing parameter-efficient fine-tuning methods."""

__version__ = "0.1.0"
