"""The host features, one module or package each, over the Feature protocol (base.py)."""
