"""docenrich: PDFs to searchable, enriched snippets."""
