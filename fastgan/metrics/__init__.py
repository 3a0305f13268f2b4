"""GAN metrics: FID (Inception v3 features, float64 statistics, native trace-sqrt),
Inception Score, domain-classifier metrics, and the in-training evaluator."""
