"""Getting text in: extraction from files, and bulk import from S3."""
