"""The master patient index: which Patient records, across institutions, are one person."""
