"""The studies: thin modules that configure and run the toolkit (``calib``, ``prune``, ``train``,
``eval``) for one line of work each, and make their figures through ``minilib.plotting``.

* ``dense``      -- dense baselines of the embedded models (perplexity, MCQ, cost);
* ``anatomy``    -- how information reaches the decision token, per layer and FFN neuron;
* ``structured`` -- FFN-neuron pruning by baselines and by the anatomy-guided strategy, ratio sweeps;
* ``sparsegpt``  -- one-shot pruning (magnitude, Wanda, SparseGPT), N:M, joint quantization;
* ``contextual`` -- Mini-GPTs: L1 neuron statistics on a domain, thresholds, vocabulary, recovery;
* ``benchmarks`` -- the tables of the measured benchmarks (``benchmarks/*.py`` write ``results/bench_*.json``).
"""
