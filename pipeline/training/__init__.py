"""Training and synthesis: the document-type model, synthetic documents and sample dossiers. Not on the runtime path."""
