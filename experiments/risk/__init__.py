"""The churn-risk model, pure: features to a design matrix, logistic regression (statsmodels),
prediction, AUC, calibration by decile, top-decile lift, coefficients with confidence intervals,
k-fold cross-validation, and a reader for plain CSV files. The database side (features as of a
date, labels from history, stored scores) is :mod:`models.risk`."""
