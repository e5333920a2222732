"""Data: reading sources into versioned snapshots, synthetic demo data, validation with Great
Expectations, and features through Feast."""
