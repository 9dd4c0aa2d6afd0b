"""The mathematics of one task: the sampler and its seeds, the exact reduced sampler, every predictor behind one
``predict(X)`` interface, the one evaluator (Monte Carlo with standard errors, Bayes by importance sampling)."""
