"""Settings shared by the distributed tests and their worker processes."""

SHORT_RUN = dict(env="CartPole-v1", num_envs=16, num_steps=16, total_timesteps=16 * 16 * 4, num_minibatches=4,
                 num_epochs=2)
"""A global batch of 16 envs x 16 steps, 4 updates, 4 minibatches: small, but every collective is exercised."""
