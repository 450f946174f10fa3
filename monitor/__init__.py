"""LoanStream monitor service (see its issue)."""
