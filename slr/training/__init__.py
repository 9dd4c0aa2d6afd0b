"""Training: the one loop over steps (:func:`slr.training.algorithms.train`), the algorithms on closed-form attention
(population PGD, full and reduced online SGD, ERM), autograd training of torch modules, and the compiled kernels
with the numpy steps they mirror."""
