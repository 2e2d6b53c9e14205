"""``parkgate report``: sales, entries and refunds reports as tables, CSV, XLSX and charts (S28)."""
