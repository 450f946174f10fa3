"""A model trained outside LoanStream: a pipeline with a transformer of our own, saved with skops.

Give `loanstream model register --data` other labelled rows than these: they calibrate and
measure the model, which on its own training rows would look better than it is.

python train_elsewhere.py HISTORY.parquet MODEL.skops
"""

import sys

import pandas as pd
import skops.io as sio
from my_features import Winsorizer
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

NUMERIC = ["income", "age", "employment_length", "loan_amount", "term_months",
           "interest_rate", "credit_score", "debt_to_income"]  # fmt: skip
CATEGORICAL = ["loan_purpose", "home_ownership"]

history = pd.read_parquet(sys.argv[1]).dropna(subset=["repaid"])
numbers = Pipeline([("impute", SimpleImputer()), ("winsorize", Winsorizer())])
categories = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
model = Pipeline(
    [
        ("prepare", ColumnTransformer([("n", numbers, NUMERIC), ("c", categories, CATEGORICAL)])),
        ("model", HistGradientBoostingClassifier(max_iter=100, random_state=0)),
    ]
)
model.fit(history[NUMERIC + CATEGORICAL], history["repaid"].astype(int))
sio.dump(model, sys.argv[2])
print(f"trained on {len(history):,} rows, saved {sys.argv[2]}")
