"""The end-to-end demo: real data (Pang & Lee polarity corpora) and a real small model (MiniLM)."""
