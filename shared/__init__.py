"""socklab's own package: socket-name helpers, the report record, the reporter, framing and STUN."""
