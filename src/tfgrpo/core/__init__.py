"""The experience library and everything it needs: config, experiences, advantages, the sampler, stats,
file formats and stores. Standard library and numpy only; nothing here imports a layer above."""
