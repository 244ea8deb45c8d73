"""A team's own business in Retain: file and SQL imports through a YAML mapping, the Stripe API
sync and Stripe webhooks. Everything here writes the customer tables in bulk (a staging table, then
one merge per table and source), one transaction per file or batch."""
