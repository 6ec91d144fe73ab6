"""Operations: what the ops team sees (status, metrics, logs, area previews) and the one signal that
goes back to the publishing pipeline (a request's id, final state and time)."""
