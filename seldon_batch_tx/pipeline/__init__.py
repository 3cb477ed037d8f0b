"""Reading lines, running units of work through the transport, counting: one batch's pipeline."""
