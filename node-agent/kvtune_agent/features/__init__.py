"""Host features, one module or package each (see the feature protocol of issue 22)."""
