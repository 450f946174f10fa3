"""LoanStream scorer: micro-batched Faust scoring with hot swap, dead letters, REST and metrics."""
