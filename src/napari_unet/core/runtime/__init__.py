"""Where work runs: device choice, worker processes, memory."""
