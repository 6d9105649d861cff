"""`kfcpo bench ...`: measurements on fixed workloads, printed or written as markdown
tables: `throughput` (raw env, rollout and training rates per vector layout), `presets`
(one epoch's update of every preset), `precond` (curvature cost against the gradients),
`envs` (raw random-action env rates) and `projection` (the margin blender's Euclidean
vs Fisher projection on real rollouts)."""
