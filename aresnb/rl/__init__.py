"""Reinforcement learning: PPO (the algorithm, its buffer, its maths, its metric row), the
critic, and a round's rollouts as stage 03 keeps them and PPO reads them."""
