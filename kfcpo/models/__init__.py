"""Policy and value networks."""

from kfcpo.models.actor import GaussianActor
from kfcpo.models.critic import Critic

__all__ = ["Critic", "GaussianActor"]
