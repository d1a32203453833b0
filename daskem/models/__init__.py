"""The model stage: estimators, the M-step families they drive, initialization, selection, preprocessing."""
