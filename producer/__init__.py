"""LoanStream producer service (see its issue)."""
