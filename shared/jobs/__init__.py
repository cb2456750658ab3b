"""What the exporter and importer share about running jobs: the lease (one run per task at a time, deliveries
counted), retries of a briefly unavailable dependency, and the dead-letter queue for poison requests."""
