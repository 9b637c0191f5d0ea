"""Non-destructive proofreading: fragment volume + fragment->segment table + durable edit log."""
