"""Training: the bundled trainer (stage one records dynamics; stage two fine-tunes on a
curated subset), its data loading and its configuration."""
