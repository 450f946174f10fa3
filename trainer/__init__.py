"""LoanStream trainer: candidate models, time-respecting selection, calibration, MLflow tracking
and registry, champion/challenger promotion, and retraining on request."""
