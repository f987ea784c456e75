"""Training a small model of the SAM 2 architecture on procedural video (see tools/train_nano.py)."""
