"""The evaluation engine behind `Evaluator`: a model as a chain of stages (`chain`),
candidates as compact keys (`candidates`), the fast forward (`runner`) and the caches
(`caches`)."""
