"""The network: `AlexNet` (`model`), its layers (`layers`: LRN, tower placement,
`ViewNormalization`) and the per-layer table (`summary`). No data or training code."""
