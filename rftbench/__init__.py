"""rftbench: a benchmark harness for robust fine-tuning of non-robust pretrained image models."""
__version__ = "0.1.0"
