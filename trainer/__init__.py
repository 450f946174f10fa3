"""LoanStream trainer service (see its issue)."""
