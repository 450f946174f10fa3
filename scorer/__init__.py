"""LoanStream scorer service (see its issue)."""
