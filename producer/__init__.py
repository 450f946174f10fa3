"""LoanStream producer: synthetic applications with drift scenarios and delayed outcomes,
history files, and replay of a lender's own history into Kafka."""
